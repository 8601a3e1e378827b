"""A real Label Studio 1.23.2 and our backend, as an annotator uses them: import images (uploads and local
storage), connect the backend, retrieve predictions, accept them, export COCO.

Each kind of project (PolygonLabels, BrushLabels) runs once; the tests read what it left behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from label_studio_sdk import LabelStudio
from pycocotools.coco import COCO
from scipy import ndimage

from converters import region_to_mask, regions_from_label_map, validate_regions
from ml_backend.demo.backend import REPO_ROOT, BackendServer
from ml_backend.demo.label_studio import LabelStudioServer
from segmentor import EmerDiffSegmentor, Segmentation, load_image
from tests.e2e.conftest import MIN_AREA, SCENES_PER_SOURCE, TIMINGS
from tests.e2e.workflow import CONTROLS, LABELS, Workflow, json_member, label_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The polygon project names its label in the config: the attribute must survive Label Studio's storage.
PROJECT_LABELS = {"polygon": "Background", "brush": LABELS[0]}
# Polygons are simplified contours of hole-filled segments, and pieces under MIN_AREA get none: close to
# the masks, not equal. The tiny random model's segments are speckled (hundreds of pieces each) and score
# ~0.8; coherent segments (the bundled model) score higher.
MIN_POLYGON_PIXEL_IOU = 0.7
SCENE_STEM = re.compile(r"scene_\d+")


@dataclass(frozen=True)
class ProjectRun:
    kind: str
    project_id: int
    config: str
    images: dict[int, Path]  # task id -> the image file it was made from
    predictions: dict[int, list]  # task id -> its predictions
    workflow: Workflow


@pytest.fixture(scope="module", params=sorted(CONTROLS))
def project_run(
    request: pytest.FixtureRequest,
    ls_client: LabelStudio,
    label_studio: LabelStudioServer,
    backend: BackendServer,
    upload_scenes: list[Path],
    local_scenes: list[Path],
) -> ProjectRun:
    kind = request.param
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    attributes = {"label": PROJECT_LABELS[kind]} if kind == "polygon" else {}
    config = label_config(kind, **attributes)
    project = ls_client.projects.create(title=f"EmerDiff end-to-end ({kind})", label_config=config)
    assert workflow.upload_images(project.id, upload_scenes) == len(upload_scenes)
    assert workflow.sync_local_folder(project.id, local_scenes[0].parent) == len(local_scenes)
    ls_client.ml.create(project=project.id, url=backend.url, title="EmerDiff")

    started = time.monotonic()
    workflow.retrieve_predictions(project.id)
    tasks = list(ls_client.tasks.list(project=project.id))
    TIMINGS[f"retrieve predictions ({kind}, {len(tasks)} tasks)"] = time.monotonic() - started

    scenes = [*upload_scenes, *local_scenes]
    images = {
        task.id: next(path for path in scenes if task.data["image"].endswith(path.name)) for task in tasks
    }
    predictions: dict[int, list] = defaultdict(list)
    for prediction in ls_client.predictions.list(project=project.id):
        predictions[prediction.task].append(prediction)
    return ProjectRun(kind, project.id, config, images, dict(predictions), workflow)


@pytest.fixture(scope="module")
def reference_segmentations(reference_segmentor: EmerDiffSegmentor) -> dict[Path, Segmentation]:
    """The in-process segmentor's results, each image segmented once for both projects."""
    return _LazySegmentations(reference_segmentor)


class _LazySegmentations(dict):
    def __init__(self, segmentor: EmerDiffSegmentor) -> None:
        super().__init__()
        self._segmentor = segmentor

    def __missing__(self, path: Path) -> Segmentation:
        # One torch thread: on the shared 2-core CI machine, two threads that wait on each other made a
        # segmentation of the tiny model 20x slower (31 s against 1.5 s, measured while another job ran).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self[path] = self._segmentor.segment(load_image(path))
        finally:
            torch.set_num_threads(threads)
        return self[path]


def test_every_task_has_one_prediction_of_the_backend_version(
    project_run: ProjectRun, backend: BackendServer
) -> None:
    assert len(project_run.images) == 2 * SCENES_PER_SOURCE, "the uploads and the local files"
    setup = requests.post(
        f"{backend.url}/setup",
        json={"project": f"{project_run.project_id}.0", "schema": project_run.config},
        timeout=30,
    )
    version = setup.json()["model_version"]
    for task_id in project_run.images:
        (prediction,) = project_run.predictions.get(task_id, [])
        assert prediction.model_version == version, f"task {task_id}"


def test_regions_are_valid_and_carry_the_project_label(project_run: ProjectRun) -> None:
    expected_type = CONTROLS[project_run.kind][0].lower()
    for task_id, (prediction,) in project_run.predictions.items():
        assert prediction.result, f"task {task_id} got no regions"
        validate_regions(prediction.result, project_run.config)
        for region in prediction.result:
            assert region["type"] == expected_type
            assert region["value"][expected_type] == [PROJECT_LABELS[project_run.kind]]


def test_regions_are_the_segmentors_own_segments(
    project_run: ProjectRun, reference_segmentations: dict[Path, Segmentation]
) -> None:
    """What Label Studio stored is the in-process segmentation of the same image, turned into regions."""
    kind = project_run.kind
    for task_id, (prediction,) in project_run.predictions.items():
        segmentation = reference_segmentations[project_run.images[task_id]]
        expected = regions_from_label_map(
            segmentation.label_map,
            kind=kind,
            label=PROJECT_LABELS[kind],
            from_name=CONTROLS[kind][1],
            to_name="image",
            min_area=MIN_AREA,
        )
        assert sorted(map(_geometry, prediction.result)) == sorted(map(_geometry, expected)), (
            f"task {task_id}"
        )

        kept = {segment.id: segment for segment in segmentation.segments if segment.area >= MIN_AREA}
        masks = {segment_id: segmentation.mask(segment_id) for segment_id in kept}
        covered = {segment_id: np.zeros_like(mask) for segment_id, mask in masks.items()}
        for region in prediction.result:
            region_mask = region_to_mask(region)
            segment_id = max(masks, key=lambda key: np.logical_and(masks[key], region_mask).sum())
            # float32 sums in another thread layout than the backend's: equal to float32 precision, not bits.
            assert region["score"] == pytest.approx(kept[segment_id].score, rel=1e-4)
            if kind == "brush":
                assert np.array_equal(region_mask, masks[segment_id]), f"task {task_id} region {region['id']}"
            covered[segment_id] |= region_mask
        if kind == "brush":
            assert all(mask.any() for mask in covered.values()), f"task {task_id}: a segment has no region"
        else:
            assert _pixel_iou(covered, masks) >= MIN_POLYGON_PIXEL_IOU, f"task {task_id}"


def _geometry(region: dict) -> str:
    """A region's shape and label, independent of its id and score."""
    return json.dumps(
        {key: region[key] for key in ("type", "value", "original_width", "original_height")}, sort_keys=True
    )


def _pixel_iou(covered: dict[int, np.ndarray], masks: dict[int, np.ndarray]) -> float:
    """IoU over all pixels of each segment's polygons with the segment, holes filled (polygons have none)."""
    filled = {key: ndimage.binary_fill_holes(mask) for key, mask in masks.items()}
    intersection = sum(np.logical_and(covered[key], filled[key]).sum() for key in masks)
    return intersection / sum(np.logical_or(covered[key], filled[key]).sum() for key in masks)


def test_accepted_predictions_export_to_coco(project_run: ProjectRun, tmp_path: Path) -> None:
    workflow, project_id = project_run.workflow, project_run.project_id
    workflow.accept_predictions(project_id)
    export = json.loads(workflow.export(project_id, "JSON"))
    regions = 0
    for task in export:
        (annotation,) = task["annotations"]
        (prediction,) = project_run.predictions[task["id"]]
        assert annotation["result"] == prediction.result
        regions += len(annotation["result"])

    ours = _our_coco(export, project_run.config, tmp_path)
    assert [category["name"] for category in ours.loadCats(ours.getCatIds())] == list(LABELS)
    assert len(ours.getImgIds()) == len(export) and len(ours.getAnnIds()) == regions
    assert min(ours.getAnnIds()) == 1 and all(
        ours.annToMask(ann).any() for ann in ours.loadAnns(ours.getAnnIds())
    )

    studio_coco = json_member(workflow.export(project_id, "COCO"))
    formats = workflow.export_formats(project_id)
    if project_run.kind == "brush":
        # A BrushLabels project cannot export COCO (Label Studio 1.23.2): Label Studio greys the format
        # out, and the endpoint still answers with a COCO file that holds no annotation at all.
        assert not formats["COCO"] and formats["BRUSH_TO_COCO"]
        assert studio_coco["annotations"] == [] and len(studio_coco["images"]) == len(export)
        return
    assert formats["COCO"]
    studio = _load_coco(studio_coco, tmp_path / "label-studio-coco.json")
    assert len(studio.getAnnIds()) == regions
    assert min(studio.getAnnIds()) == 0, "Label Studio numbers annotations from 0"
    for stem, image_id in _image_ids_by_stem(ours).items():
        studio_image_id = _image_ids_by_stem(studio)[stem]
        ours_mask = _union_mask(ours, image_id)
        studio_mask = _union_mask(studio, studio_image_id)
        assert (
            np.logical_and(ours_mask, studio_mask).sum() / np.logical_or(ours_mask, studio_mask).sum() > 0.99
        )


def _our_coco(export: list, config: str, folder: Path) -> COCO:
    """Our converter's CLI on Label Studio's JSON export."""
    export_path, config_path, coco_path = (
        folder / "export.json",
        folder / "config.xml",
        folder / "ours-coco.json",
    )
    export_path.write_text(json.dumps(export), encoding="utf-8")
    config_path.write_text(config, encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "converters",
            "ls2coco",
            str(export_path),
            "--config",
            str(config_path),
            "--out",
            str(coco_path),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return COCO(str(coco_path))


def _load_coco(dataset: dict, path: Path) -> COCO:
    path.write_text(json.dumps(dataset), encoding="utf-8")
    return COCO(str(path))


def _image_ids_by_stem(coco: COCO) -> dict[str, int]:
    return {
        SCENE_STEM.search(image["file_name"])[0]: image["id"] for image in coco.loadImgs(coco.getImgIds())
    }


def _union_mask(coco: COCO, image_id: int) -> np.ndarray:
    image = coco.loadImgs([image_id])[0]
    union = np.zeros((image["height"], image["width"]), bool)
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        union |= coco.annToMask(annotation).astype(bool)
    return union
