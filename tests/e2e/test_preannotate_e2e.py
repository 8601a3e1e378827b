"""The whole-project job against a real Label Studio 1.23.2: a project of 12 tasks pre-annotated by
``python -m ml_backend preannotate``, killed with SIGKILL midway and run again. Every task ends with
exactly one prediction of the backend's version; Label Studio then never asks the backend again, and
the backend asked directly answers from its cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio
from prometheus_client.parser import text_string_to_metric_families

from ml_backend.demo.backend import REPO_ROOT, BackendServer
from ml_backend.demo.label_studio import LabelStudioServer
from ml_backend.preannotate.cli import EXIT_OK
from segmentor.toy.scenes import write_scenes
from tests.e2e.conftest import TIMINGS
from tests.e2e.workflow import Workflow, label_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS, SCENE_SEED, FOLDER = 12, 700, "preannotate"
KILL_AFTER_PREDICTIONS = 4
TIMEOUT_S = 900.0


def job_command(label_studio: LabelStudioServer, project: int) -> list[str]:
    return [sys.executable, "-m", "ml_backend", "preannotate", "--url", label_studio.url,
            "--api-key", label_studio.token, "--project", str(project)]


def backend_counters(backend: BackendServer) -> Counter:
    """(metric, label value) -> count, from the backend's Prometheus /metrics."""
    text = requests.get(f"{backend.url}/metrics", timeout=10).text
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[(sample.name, *sample.labels.values())] += sample.value
    return counts


@pytest.fixture(scope="module")
def project(ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer,
            document_root: Path) -> int:
    """12 local-storage tasks, the backend connected (so Label Studio knows its version)."""
    scenes = write_scenes(document_root / FOLDER, TASKS, SCENE_SEED)
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    created = ls_client.projects.create(title="EmerDiff whole-project job", label_config=label_config("polygon"))
    assert workflow.sync_local_folder(created.id, scenes[0].parent) == TASKS
    ls_client.ml.create(project=created.id, url=backend.url, title="EmerDiff")
    return created.id


def test_killed_job_resumes_to_exactly_one_prediction_per_task(
    ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer, project: int,
    tmp_path: Path,
) -> None:
    env = dict(backend.env)  # the backend's own settings and cache: the job must predict what it would
    started = time.monotonic()
    # --tasks selects through the Data Manager's query: only that task is predicted.
    first = min(task.id for task in ls_client.tasks.list(project=project))
    selected = subprocess.run([*job_command(label_studio, project), "--tasks", str(first)], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert selected.returncode == EXIT_OK, selected.stderr[-4000:]
    assert [p.task for p in ls_client.predictions.list(project=project)] == [first]

    log = tmp_path / "job.log"
    with log.open("wb") as handle:
        job = subprocess.Popen(job_command(label_studio, project), cwd=REPO_ROOT, env=env, stdout=handle,
                               stderr=subprocess.STDOUT)
    try:
        while len(ls_client.predictions.list(project=project)) < KILL_AFTER_PREDICTIONS:
            assert job.poll() is None, f"the job ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() - started < TIMEOUT_S, log.read_text()
            time.sleep(0.2)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=60)
    time.sleep(1.0)  # a push the kill cut off may still be stored
    before = len(ls_client.predictions.list(project=project))
    assert before < TASKS, "the kill came too late to interrupt anything"

    resumed = subprocess.run(job_command(label_studio, project), cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == EXIT_OK, resumed.stderr[-4000:]
    TIMINGS[f"preannotate job ({TASKS} tasks, killed once)"] = time.monotonic() - started
    assert f"already there   {before} " in resumed.stderr

    versions = requests.post(f"{backend.url}/setup", json={"project": f"{project}.0",
                                                           "schema": label_config("polygon")}, timeout=30)
    version = versions.json()["model_version"]
    predictions = ls_client.predictions.list(project=project)
    tasks = list(ls_client.tasks.list(project=project))
    assert len(tasks) == TASKS
    assert Counter(p.task for p in predictions if p.model_version == version) == dict.fromkeys(
        [task.id for task in tasks], 1)
    assert len(predictions) == TASKS
    assert all(p.result for p in predictions)


def test_opening_a_task_afterwards_costs_no_segmentation(
    ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer, project: int,
) -> None:
    before = backend_counters(backend)
    # Label Studio asked for every task's prediction: it holds this version already, so it asks nothing.
    Workflow(ls_client, label_studio.url, label_studio.token).retrieve_predictions(project)
    assert backend_counters(backend)[("emerdiff_requests_total", "predict")] == \
        before[("emerdiff_requests_total", "predict")]
    assert len(ls_client.predictions.list(project=project)) == TASKS

    # The backend asked directly (an annotator opening a task with the version changed elsewhere,
    # interactive tools...) answers from the cache the job filled, with the job's regions.
    task = next(iter(ls_client.tasks.list(project=project)))
    (pushed,) = ls_client.predictions.list(task=task.id)
    answer = requests.post(f"{backend.url}/predict", timeout=120, json={
        "tasks": [{"id": task.id, "data": task.data}], "project": f"{project}.0",
        "label_config": label_config("polygon"), "params": {"context": None},
    })
    answer.raise_for_status()
    (result,) = answer.json()["results"]
    after = backend_counters(backend)
    cache = "emerdiff_cache_events_total"
    assert after[(cache, "hits")] == before[(cache, "hits")] + 1
    assert after[(cache, "misses")] == before[(cache, "misses")]
    assert result["model_version"] == pushed.model_version
    assert result["result"] == pushed.result
