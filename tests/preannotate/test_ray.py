"""The --ray path on a local Ray cluster of 2 CPU actors: the same predictions as the single-process run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ml_backend.demo.backend import REPO_ROOT
from ml_backend.preannotate.cli import EXIT_OK
from tests.preannotate.stub_label_studio import TOKEN, StubState, running_stub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_job(url: str, env: dict[str, str], tmp_path: Path, *extra: str) -> str:
    """The job as a process (Ray starts its cluster from it and stops it when it exits); its output."""
    command = [sys.executable, "-m", "ml_backend", "preannotate", "--url", url, "--api-key", TOKEN,
               "--project", "1", "--ledger", str(tmp_path / "ledger.sqlite3"), *extra]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_OK, done.stderr[-4000:]
    return done.stderr


def test_two_ray_actors_give_the_single_process_predictions(
    state: StubState, stub_url: str, job_env: dict[str, str], tmp_path: Path
) -> None:
    single_state = StubState(label_config=state.label_config, tasks=dict(state.tasks))
    with running_stub(single_state) as single_url:
        run_job(single_url, job_env | {"CACHE_DIR": str(tmp_path / "single-cache")}, tmp_path / "single")

    # A cache of its own, so that the actors really segment.
    output = run_job(stub_url, job_env | {"CACHE_DIR": str(tmp_path / "ray-cache")}, tmp_path / "ray",
                     "--ray", "--actors", "2", "--cpus-per-actor", "1")
    assert "segmented in 2 Ray actor(s), each with {'num_cpus': 1}" in output

    def by_task(stub: StubState) -> dict[int, tuple]:
        return {p["task"]: (p["model_version"], p["result"], p["score"]) for p in stub.predictions.values()}

    assert by_task(state) == by_task(single_state)
    assert len(state.predictions) == len(state.tasks)
