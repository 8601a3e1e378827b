"""A Label Studio project with the backend connected, as the label-learning and zero-shot e2e tests drive it:
the backend's current version, waiting for webhooks to change it, and each task's prediction of that version."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio

from ml_backend.demo.backend import BackendServer
from tests.e2e.workflow import Workflow

# Label Studio posts each webhook with a short timeout and moves on; the backend may still be learning.
WEBHOOK_WAIT_S = 60.0


class LearningProject:
    def __init__(self, client: LabelStudio, workflow: Workflow, backend: BackendServer, images: list[Path], *,
                 title: str, label_config: str) -> None:
        self.client, self.workflow, self.backend, self.label_config = client, workflow, backend, label_config
        self.id = client.projects.create(title=title, label_config=label_config).id
        assert workflow.upload_images(self.id, images) == len(images)
        self.ml_id = client.ml.create(project=self.id, url=backend.url, title=title).id
        self.tasks = sorted(task.id for task in client.tasks.list(project=self.id))

    def backend_version(self) -> str:
        response = requests.post(f"{self.backend.url}/setup",
                                 json={"project": f"{self.id}.0", "schema": self.label_config}, timeout=10)
        response.raise_for_status()
        return response.json()["model_version"]

    def wait_for_version(self, done: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + WEBHOOK_WAIT_S
        while not done(self.backend_version()):
            assert time.monotonic() < deadline, "the webhooks never brought the backend's model version there"
            time.sleep(0.5)

    def predictions(self) -> dict[int, dict]:
        """Retrieve Predictions, then each task's prediction of the version Label Studio now holds."""
        self.workflow.retrieve_predictions(self.id)
        version = self.client.ml.get(id=self.ml_id).model_version
        found = {}
        for task_id in self.tasks:
            current = [p for p in self.client.predictions.list(task=task_id) if p.model_version == version]
            assert len(current) == 1, f"task {task_id}: {len(current)} predictions of {version}"
            found[task_id] = {"result": current[0].result, "score": current[0].score, "model_version": version}
        return found
