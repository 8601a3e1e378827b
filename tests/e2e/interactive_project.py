"""An interactive project in the real Label Studio: a brush control beside smart keypoint and rectangle tools
(upstream SAM examples' layout), the backend connected with interactive pre-annotations on.

Shared by the interactive end-to-end test and the browser test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from tests.e2e.workflow import LABELS, Workflow

OUTPUT_CONTROL, KEYPOINT_CONTROL, RECTANGLE_CONTROL = "paint", "smart-point", "smart-box"


def interactive_label_config() -> str:
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    smart_labels = "".join(f'<Label value="{label}" smart="true"/>' for label in LABELS)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<BrushLabels name="{OUTPUT_CONTROL}" toName="image">{labels}</BrushLabels>'
        f'<KeyPointLabels name="{KEYPOINT_CONTROL}" toName="image" smart="true">{smart_labels}</KeyPointLabels>'
        f'<RectangleLabels name="{RECTANGLE_CONTROL}" toName="image" smart="true">{labels}</RectangleLabels>'
        "</View>"
    )


@dataclass(frozen=True)
class InteractiveProject:
    project_id: int
    ml_backend_id: int
    config: str
    tasks: dict[int, Path]  # task id -> the image file it was made from
    workflow: Workflow

    def ask(self, task_id: int, result: list[dict]) -> dict:
        """What the editor does after a smart region is drawn: POST /api/ml/<id>/interactive-annotating."""
        response = requests.post(
            f"{self.workflow.url}/api/ml/{self.ml_backend_id}/interactive-annotating",
            headers={"Authorization": f"Token {self.workflow.token}"},
            json={"task": task_id, "context": {"result": result}},
            timeout=300,
        )
        response.raise_for_status()
        return response.json()


def create_interactive_project(workflow: Workflow, backend_url: str, images: list[Path]) -> InteractiveProject:
    config = interactive_label_config()
    client = workflow.client
    project = client.projects.create(title="EmerDiff smart tools", label_config=config)
    assert workflow.upload_images(project.id, images) == len(images)
    backend = client.ml.create(project=project.id, url=backend_url, title="EmerDiff", is_interactive=True)
    tasks = {
        task.id: next(path for path in images if task.data["image"].endswith(path.name))
        for task in client.tasks.list(project=project.id)
    }
    return InteractiveProject(project.id, backend.id, config, tasks, workflow)
