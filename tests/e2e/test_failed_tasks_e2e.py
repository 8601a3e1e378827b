"""A task the backend cannot predict leaves nothing in a real Label Studio 1.23.2.

The backend answers a failed task with an entry that has no ``result``; Label Studio's
``MLBackend._get_predictions_from_ml_backend`` (ml/models.py) skips such an entry, so no empty
prediction is stored and no error version joins the project's model-version menu, however often
predictions are retrieved. The good task of the same batch gets its one prediction.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio

from ml_backend.demo.backend import BackendServer
from ml_backend.demo.label_studio import LabelStudioServer
from tests.e2e.workflow import Workflow, label_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAILING_IMAGES = [
    "/data/upload/1/never-uploaded.png",  # Label Studio answers 404: image_fetch
    "http://127.0.0.1:1/private.png",  # a private address: image_source
]
RETRIEVALS = 3


def test_failed_tasks_leave_no_prediction_and_no_version(
    ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer, upload_scenes: list[Path]
) -> None:
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    config = label_config("polygon")
    project = ls_client.projects.create(title="EmerDiff failed tasks", label_config=config)
    assert workflow.upload_images(project.id, upload_scenes[:1]) == 1
    ls_client.projects.import_tasks(id=project.id, request=[{"image": image} for image in FAILING_IMAGES])
    ls_client.ml.create(project=project.id, url=backend.url, title="EmerDiff")
    tasks = {task.data["image"]: task.id for task in ls_client.tasks.list(project=project.id)}
    assert len(tasks) == 1 + len(FAILING_IMAGES)

    for _ in range(RETRIEVALS):
        workflow.retrieve_predictions(project.id)

    version = requests.post(
        f"{backend.url}/setup", json={"project": f"{project.id}.0", "schema": config}, timeout=30
    ).json()["model_version"]
    predictions = list(ls_client.predictions.list(project=project.id))
    failing_ids = {tasks[image] for image in FAILING_IMAGES}
    assert [prediction for prediction in predictions if prediction.task in failing_ids] == []
    [good] = predictions  # the uploaded scene's, once: it was not asked again
    assert good.result and good.model_version == version

    menu = requests.get(
        f"{label_studio.url}/api/projects/{project.id}/model-versions/",
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30,
    )
    menu.raise_for_status()
    # The menu lists each stored version with its count, and the connected backend by its title.
    assert not [name for name in menu.json() if "error" in name]
    assert {name: count for name, count in menu.json().items() if count} == {version: 1}

    # The backend did see every failing task on every retrieval: they were retried, not forgotten.
    metrics = requests.get(f"{backend.url}/metrics", timeout=30).text
    assert 'emerdiff_task_errors_total{reason="image_fetch"}' in metrics
    assert 'emerdiff_task_errors_total{reason="image_source"}' in metrics
