"""Zero-shot labels through a real Label Studio 1.23.2: a project whose labels name colours gets correctly
labelled regions on its very first task, with no annotation; then annotations change labels as the one rule
says. The backend runs the bundled diffusion model and the bundled CLIP (EMERDIFF_CLIP_MODEL=bundled).

Label values are deliberately not the words ("Rouge" is prompted "red"): the words come from
``emerdiff-prompt``, which Label Studio must accept on ``<Label>`` and keep in the stored config.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_sdk import LabelStudio

from converters.labelstudio import region_to_mask
from ml_backend.demo.backend import BackendServer, running_backend
from ml_backend.demo.label_studio import LabelStudioServer
from segmentor.toy.scenes import generate_scene
from segmentor.zeroshot import BUNDLED_CLIP_DIR
from tests.e2e.conftest import BACKEND_SETTINGS, TIMINGS
from tests.e2e.learning_project import LearningProject
from tests.e2e.workflow import Workflow
from tests.labels.support import labels_by_segment, relabelled, segment_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not (BUNDLED_CLIP_DIR / "config.json").is_file(), reason="bundled CLIP not trained")]

CONTROL = "outline"
# Ground-truth class id of the colour scenes -> label value; each value's word is its emerdiff-prompt.
LABELS = {0: ("Fond", "background"), 1: ("Rouge", "red"), 2: ("Vert", "green"), 3: ("Bleu", "blue")}
CLASS_OF = {value: class_id for class_id, (value, _) in LABELS.items()}
CONFIG = ('<View><Image name="image" value="$image"/>'
          f'<PolygonLabels name="{CONTROL}" toName="image">'
          + "".join(f'<Label value="{value}" emerdiff-prompt="{word}"'
                    + (' emerdiff-background="true"' if class_id == 0 else "") + "/>"
                    for class_id, (value, word) in LABELS.items())
          + "</PolygonLabels></View>")
# Colour scenes holding one red, one green and one blue object each (found with segmentor.toy.scenes).
SEEDS = (609, 619, 629)
# Regions smaller than this share of the image are slivers along segment borders: not judged.
MIN_JUDGED_AREA = 0.02


@pytest.fixture(scope="module")
def zero_shot_backend(label_studio: LabelStudioServer, model_reference: str,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """Our own backend with the bundled CLIP, so the session backend (zero-shot off) stays as it is."""
    work_dir = tmp_path_factory.mktemp("zero-shot-backend")
    settings = BACKEND_SETTINGS | {
        "EMERDIFF_MODEL": model_reference,
        "EMERDIFF_CLIP_MODEL": "bundled",
        # The mode measured best on the bundled models (docs/QUALITY.md, "Zero-shot labels").
        "EMERDIFF_CLIP_MODE": "sclip",
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "CACHE_DIR": str(work_dir / "cache"),
        "DATA_DIR": str(work_dir / "data"),
    }
    with running_backend(settings, log_path=work_dir / "backend.log") as server:
        yield server


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """File name -> ground-truth class map, the images written beside."""
    folder = tmp_path_factory.mktemp("zero-shot-scenes")
    truth = {}
    for seed in SEEDS:
        scene = generate_scene(seed, 64, classes="colour")
        cv2.imwrite(str(folder / f"zs_{seed}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        truth[f"zs_{seed}.png"] = scene.class_map
    return {str(folder / name): gt for name, gt in truth.items()}


def _true_label(region: dict, gt: np.ndarray) -> str:
    return LABELS[int(np.bincount(gt[region_to_mask(region)].ravel(), minlength=4).argmax())][0]


def _misjudged(predictions: dict[int, dict], truth: dict[int, np.ndarray]) -> list[tuple]:
    """(task, region, label, true label) of each judged region whose label is not its pixels' majority class."""
    wrong = []
    for task_id, prediction in predictions.items():
        gt = truth[task_id]
        for region in prediction["result"]:
            if region_to_mask(region).mean() >= MIN_JUDGED_AREA:
                label, expected = region["value"]["polygonlabels"][0], _true_label(region, gt)
                if label != expected:
                    wrong.append((task_id, region["id"], label, expected))
    return wrong


def test_label_studio_keeps_emerdiff_attributes_on_labels(ls_client: LabelStudio) -> None:
    project = ls_client.projects.create(title="EmerDiff zero-shot config", label_config=CONFIG)
    stored = ElementTree.fromstring(ls_client.projects.get(id=project.id).label_config)
    sent = ElementTree.fromstring(CONFIG)
    assert [label.attrib for label in stored.iter("Label")] == [label.attrib for label in sent.iter("Label")]
    ls_client.projects.delete(id=project.id)


def test_first_task_labelled_from_label_names_then_the_one_rule(
        ls_client: LabelStudio, label_studio: LabelStudioServer, zero_shot_backend: BackendServer,
        scenes: dict[str, np.ndarray]) -> None:
    started = time.monotonic()
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    paths = [Path(path) for path in scenes]
    project = LearningProject(ls_client, workflow, zero_shot_backend, paths, title="EmerDiff zero-shot",
                              label_config=CONFIG)
    truth = {}
    for task_id in project.tasks:
        image = ls_client.tasks.get(id=task_id).data["image"]
        (path,) = [p for p in scenes if Path(p).name.split(".")[0] in image]
        truth[task_id] = scenes[path]

    # Zero annotations: every region labelled from the label names with its pixels' majority class (the
    # best any labelling of these segments can do), with its probability as the score.
    first = project.predictions()
    assert _misjudged(first, truth) == []
    found = set()
    for prediction in first.values():
        for region in prediction["result"]:
            assert 0.0 <= region["score"] <= 1.0
            found.add(region["value"]["polygonlabels"][0])
    assert found - {"Fond"}, "no object label on any region: zero-shot labelled everything background"

    # An annotator calls the red segment "Vert" and a background segment "Rouge". Rouge and Vert now have
    # examples: the red segment's learnt "Vert" overrides zero-shot's "Rouge". Fond and Bleu have none:
    # zero-shot keeps them (the one rule: k-NN cannot vote for a label it has no examples of).
    task_id = next(t for t in project.tasks if "Rouge" in labels_by_segment(first[t]).values())
    labels = labels_by_segment(first[task_id])
    red = next(segment for segment, label in labels.items() if label == "Rouge")
    background = next(segment for segment, label in labels.items() if label == "Fond")
    before = project.backend_version()
    ls_client.annotations.create(id=task_id, result=relabelled(first[task_id], {red: "Vert", background: "Rouge"}))
    project.wait_for_version(lambda version: version != before)
    taught = project.predictions()
    assert labels_by_segment(taught[task_id])[red] == "Vert"
    assert labels_by_segment(taught[task_id])[background] == "Fond"
    for other, prediction in first.items():
        for segment, label in labels_by_segment(prediction).items():
            if label in ("Bleu", "Fond"):
                assert labels_by_segment(taught[other])[segment] == label, (other, segment, label)
    assert [segment_of(r) for r in taught[task_id]["result"]] == [segment_of(r) for r in first[task_id]["result"]]
    TIMINGS["zero-shot e2e"] = time.monotonic() - started
