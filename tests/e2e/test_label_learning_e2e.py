"""Label learning against a real Label Studio 1.23.2: annotations made through its API reach the backend
through the webhook Label Studio creates when the model is connected, and the next predictions carry them.

Annotators accept predicted regions and pick labels; "Retrieve Predictions" then predicts again every task
whose prediction is of an older model version (the version carries the label memory's revision).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest
from label_studio_sdk import LabelStudio

from ml_backend.core.settings import Settings
from ml_backend.demo.backend import BackendServer
from ml_backend.demo.label_studio import LabelStudioServer
from ml_backend.labels.learning import UnknownProjectError
from ml_backend.model import Runtime
from segmentor import load_model
from segmentor.toy.scenes import generate_scene
from tests.e2e.conftest import BACKEND_SETTINGS, TIMINGS
from tests.e2e.learning_project import LearningProject
from tests.e2e.workflow import Workflow
from tests.labels.support import label_config, labels_by_segment, largest_segments, relabelled

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONTROL = "outline"
CONFIG = label_config(CONTROL)
SEEDS = (501, 502, 503)


@pytest.fixture(scope="module")
def colour_scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("colour-scenes")
    paths = []
    for seed in SEEDS:
        path = folder / f"colour_{seed}.png"
        cv2.imwrite(str(path), cv2.cvtColor(generate_scene(seed, 64, classes="colour").image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


class Project(LearningProject):
    def __init__(self, client: LabelStudio, workflow: Workflow, backend: BackendServer, scenes: list[Path]) -> None:
        super().__init__(client, workflow, backend, scenes, title="EmerDiff label learning", label_config=CONFIG)

    def annotate(self, task_id: int, prediction: dict, labels: dict[int, str]) -> int:
        before = self.backend_version()
        annotation = self.client.annotations.create(id=task_id, result=relabelled(prediction, labels))
        self.wait_for_version(lambda version: version != before)
        return annotation.id


def test_labels_learnt_from_annotations(ls_client: LabelStudio, label_studio: LabelStudioServer,
                                        backend: BackendServer, colour_scenes: list[Path],
                                        model_reference: str, tmp_path: Path) -> None:
    started = time.monotonic()
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    project = Project(ls_client, workflow, backend, colour_scenes)
    first, second, third = project.tasks
    original = project.predictions()
    assert {label for p in original.values() for label in labels_by_segment(p).values()} == {"Object"}

    # Two tasks annotated with different labels: each image's annotated segments come back with them.
    red, blue = largest_segments(original[first], 2)
    (green,) = largest_segments(original[second], 1)
    annotations = [project.annotate(first, original[first], {red: "Red", blue: "Blue"}),
                   project.annotate(second, original[second], {green: "Green"})]
    learnt = project.predictions()
    assert labels_by_segment(learnt[first])[red] == "Red" and labels_by_segment(learnt[first])[blue] == "Blue"
    assert labels_by_segment(learnt[second])[green] == "Green"
    assert [r["value"]["points"] for r in learnt[first]["result"]] == [
        r["value"]["points"] for r in original[first]["result"]]  # the same segmentation, from the cache

    # A further annotation changes the third task's prediction.
    (more,) = [s for s in largest_segments(original[second], 2) if s != green]
    annotations.append(project.annotate(second, original[second], {more: "Blue"}))
    assert project.predictions()[third]["result"] != learnt[third]["result"]

    # The same memory, rebuilt through Label Studio's API (what "Start Training" and the CLI do).
    _rebuild_through_the_api(label_studio, project.id, model_reference, tmp_path)

    # Deleting every annotation returns the default label (and the version Label Studio first got).
    for annotation in annotations:
        ls_client.annotations.delete(id=annotation)
    project.wait_for_version(lambda version: version == original[first]["model_version"])
    assert project.predictions() == original
    TIMINGS["label learning e2e"] = time.monotonic() - started


def _rebuild_through_the_api(label_studio: LabelStudioServer, project: int, model_reference: str,
                             tmp_path: Path) -> None:
    settings = Settings(
        model=model_reference,
        device="cpu",
        num_segments=int(BACKEND_SETTINGS["EMERDIFF_NUM_SEGMENTS"]),
        seed=int(BACKEND_SETTINGS["EMERDIFF_SEED"]),
        min_area=int(BACKEND_SETTINGS["EMERDIFF_MIN_AREA"]),
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        cache_dir=tmp_path / "cache",
        data_dir=tmp_path / "data",
    )
    runtime = Runtime.create(settings, load_model(model_reference, device="cpu"))
    first = runtime.rebuild_job(project)()
    assert first == {"learnt": 3, "unchanged": 0, "cancelled": 0, "failed": 0, "forgotten": 0}
    assert runtime.rebuild_job(project)()["unchanged"] == 3
    assert set(runtime.learning.memory.counts(project)) == {"Red", "Green", "Blue"}
    with pytest.raises(UnknownProjectError, match="no project 999999"):
        runtime.rebuild_job(999999)
