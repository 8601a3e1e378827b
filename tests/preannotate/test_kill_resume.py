"""A real job process stopped with SIGTERM, then killed with SIGKILL mid-run, then run again: every task
ends with exactly one prediction of the version, none is pushed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_backend.demo.backend import REPO_ROOT
from ml_backend.preannotate.cli import EXIT_OK, EXIT_RESUMABLE
from tests.preannotate.stub_label_studio import TOKEN, StubState

pytestmark = pytest.mark.e2e

KILL_AFTER_PUSHES = 2
TIMEOUT_S = 300.0


def start_job(stub_url: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "ml_backend", "preannotate", "--url", stub_url, "--api-key", TOKEN,
               "--project", "1", "--backoff", "0.01"]
    with log.open("ab") as handle:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def interrupt_after(pushes: int, job: subprocess.Popen, state: StubState, log: Path, signum: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(state.predictions) < pushes:
            assert job.poll() is None, f"the job ended before it was stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.kill(job.pid, signum)
    finally:
        job.wait(timeout=120)


def test_sigterm_then_sigkill_mid_run_then_resume(state: StubState, stub_url: str, job_env: dict[str, str],
                                                  tmp_path: Path) -> None:
    # A cache of its own: with segmentations already cached the run could end before the kill.
    env = job_env | {"CACHE_DIR": str(tmp_path / "cache")}
    log = tmp_path / "job.log"
    # SIGTERM (docker stop): a clean, resumable stop with a summary.
    stopped = start_job(stub_url, env, log)
    interrupt_after(1, stopped, state, log, signal.SIGTERM)
    assert stopped.returncode == EXIT_RESUMABLE, log.read_text()
    assert "stopped early: interrupted" in log.read_text()
    # SIGKILL: no chance to clean up at all.
    job = start_job(stub_url, env, log)
    interrupt_after(KILL_AFTER_PUSHES + 1, job, state, log, signal.SIGKILL)
    assert job.returncode == -signal.SIGKILL
    time.sleep(0.5)  # a push the kill cut off may still be stored by the server
    pushed_before = len(state.predictions)
    assert pushed_before < len(state.tasks), "the kill came too late to interrupt anything"

    resumed_log = tmp_path / "resumed.log"
    resumed = start_job(stub_url, env, resumed_log)
    assert resumed.wait(timeout=TIMEOUT_S) == EXIT_OK, resumed_log.read_text()
    (version,) = {prediction["model_version"] for prediction in state.predictions.values()}
    assert {task: len(state.predictions_of(task, version)) for task in state.tasks} == dict.fromkeys(state.tasks, 1)
    assert len(state.creates()) == len(state.tasks)  # not one push repeated
    summary = resumed_log.read_text()
    assert f"already there   {pushed_before} " in summary
    assert f"pushed now      {len(state.tasks) - pushed_before} " in summary
