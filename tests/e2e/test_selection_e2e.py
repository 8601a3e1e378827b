"""A 250-task selection in a real Label Studio 1.23.2: "Retrieve Predictions", repeated, completes it.

Label Studio sends the whole selection in one /predict and waits ML_TIMEOUT_PREDICT (100 s). The backend
answers within PREDICT_BUDGET_SECONDS: the tasks it reached get predictions, the rest entries without a
result (Label Studio stores nothing for them) while their segmentations go on in the background. Label
Studio's next retrieval sends only the tasks that lack the current version, so repeating the action
completes the selection with exactly one prediction per task. The number of repeats is printed with the
e2e timings.

Kept short: 250 distinct files (distinct references, each read by the backend) copying 10 small scenes,
so the bundled model segments 10 images (the cache is keyed by content); a 5 s budget spreads them over
several retrievals.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio

from ml_backend.demo.backend import running_backend
from ml_backend.demo.label_studio import LabelStudioServer
from segmentor.toy.scenes import write_scenes
from tests.e2e.conftest import BACKEND_SETTINGS, TIMINGS
from tests.e2e.workflow import Workflow, label_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS, SCENES, SCENE_SEED = 250, 10, 500
FOLDER = "selection"
BUDGET_S = 5
MAX_REPEATS = 60  # far above what 10 segmentations need; reached only when selections never complete
PAUSE_S = 2.0  # between repeats, as a user would wait: the background queue keeps working meanwhile


def test_retrieving_predictions_repeatedly_completes_a_250_task_selection(
    ls_client: LabelStudio,
    label_studio: LabelStudioServer,
    model_reference: str,
    document_root: Path,
    tmp_path: Path,
) -> None:
    scenes = write_scenes(tmp_path / "scenes", SCENES, SCENE_SEED)
    folder = document_root / FOLDER
    folder.mkdir()
    references = []
    for number in range(TASKS):
        copy = folder / f"task{number:03d}.png"
        shutil.copyfile(scenes[number % SCENES], copy)
        references.append(f"/data/local-files/?d={FOLDER}/{copy.name}")

    settings = BACKEND_SETTINGS | {
        "EMERDIFF_MODEL": model_reference,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "CACHE_DIR": str(tmp_path / "cache"),
        "DATA_DIR": str(tmp_path / "data"),
        "PREDICT_BUDGET_SECONDS": str(BUDGET_S),
    }
    with running_backend(settings, log_path=tmp_path / "backend.log") as backend:
        workflow = Workflow(ls_client, label_studio.url, label_studio.token)
        config = label_config("polygon")
        project = ls_client.projects.create(title="EmerDiff 250-task selection", label_config=config)
        ls_client.projects.import_tasks(id=project.id, request=[{"image": image} for image in references])
        ls_client.ml.create(project=project.id, url=backend.url, title="EmerDiff")
        task_ids = {task.id for task in ls_client.tasks.list(project=project.id)}
        assert len(task_ids) == TASKS

        started = time.perf_counter()
        repeats, counts = 0, Counter()
        while repeats < MAX_REPEATS:
            workflow.retrieve_predictions(project.id)
            repeats += 1
            counts = Counter(prediction.task for prediction in ls_client.predictions.list(project=project.id))
            if set(counts) == task_ids:
                break
            time.sleep(PAUSE_S)
        TIMINGS[f"250-task selection ({repeats} retrievals)"] = time.perf_counter() - started
        print(f"250-task selection: complete after {repeats} retrievals")

        assert set(counts) == task_ids, f"{len(counts)} of {TASKS} tasks predicted after {repeats} retrievals"
        assert set(counts.values()) == {1}, "a task holds more than one prediction"
        assert repeats > 1, "the budget was never spent: the test no longer exercises deferral"
        version = requests.post(
            f"{backend.url}/setup", json={"project": f"{project.id}.0", "schema": config}, timeout=30
        ).json()["model_version"]
        predictions = list(ls_client.predictions.list(project=project.id))
        assert all(prediction.result and prediction.model_version == version for prediction in predictions)
        metrics = requests.get(f"{backend.url}/metrics", timeout=30).text
        assert 'emerdiff_tasks_total{outcome="deferred"}' in metrics
        # The cache is keyed by content: 250 references, 10 segmentations.
        assert 'emerdiff_segmentor_total{counter="segmentations"} 10.0' in metrics
    assert "python -m ml_backend preannotate" in (tmp_path / "backend.log").read_text()
