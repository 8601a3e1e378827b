"""The COCO converter on exports of the real Label Studio 1.23.2 (the session's instance): the fixture project
of tests/converters/data/make_export.py built for real, its committed export checked current, every region
checked against its rasterisation, the round trip COCO → coco2ls → Label Studio → ls2coco, and Label
Studio's own COCO export of the same project measured beside ours (the README's comparison)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
from label_studio_sdk import LabelStudio
from pycocotools.coco import COCO

from converters import coco_to_label_studio_tasks, label_studio_export_to_coco, region_to_mask
from converters.images import ImageFolders
from ml_backend.demo.label_studio import LabelStudioServer
from tests.converters.conftest import load_export_builder
from tests.converters.test_export import ALL, GROUND_TRUTH, LATEST
from tests.e2e.conftest import TIMINGS
from tests.e2e.workflow import Workflow, json_member

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIN_IOU = 0.99


@dataclass(frozen=True)
class FixtureProject:
    project_id: int
    export: list[dict]  # as Label Studio wrote it, not normalised
    config: str
    folders: ImageFolders
    builder: ModuleType


@pytest.fixture(scope="module")
def fixture_project(
    label_studio: LabelStudioServer, document_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> FixtureProject:
    builder = load_export_builder()
    started = time.monotonic()
    project_id, export = builder.build_in_label_studio(
        label_studio.url, label_studio.token, document_root, tmp_path_factory.mktemp("coco-fixture")
    )
    TIMINGS["COCO fixture project"] = time.monotonic() - started
    folders = ImageFolders(document_root, label_studio.data_dir / "media")
    return FixtureProject(project_id, export, builder.label_config(), folders, builder)


def _load(document: dict, folder: Path, name: str) -> COCO:
    path = folder / name
    path.write_text(json.dumps(document), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _regions(export: list[dict]) -> dict[str, dict]:
    return {
        region["id"]: region
        for task in export
        for entry in [*task["annotations"], *task["predictions"]]
        for region in entry["result"]
    }


def test_the_committed_fixture_export_is_current(fixture_project: FixtureProject) -> None:
    committed = json.loads(fixture_project.builder.EXPORT_PATH.read_text(encoding="utf-8"))
    assert fixture_project.builder.normalise(fixture_project.export) == committed, (
        "Label Studio now exports the fixture differently: run python tests/converters/data/make_export.py"
    )


@pytest.mark.parametrize(("selection", "expected"), [("ground-truth", GROUND_TRUTH), ("latest", LATEST), ("all", ALL)])
def test_every_region_of_the_real_export_matches_its_rasterisation(
    fixture_project: FixtureProject, tmp_path: Path, selection: str, expected: dict
) -> None:
    converted = label_studio_export_to_coco(
        fixture_project.export,
        fixture_project.config,
        annotations=selection,
        predictions=True,
        folders=fixture_project.folders,
    )
    coco = _load(converted.dataset, tmp_path, "coco.json")
    task_order = {task["id"]: index + 1 for index, task in enumerate(fixture_project.export)}
    kept: dict[int, set] = {task_order[image["ls_task_id"]]: set() for image in coco.dataset["images"]}
    regions = _regions(fixture_project.export)
    for annotation in coco.dataset["annotations"]:
        kept[task_order[coco.imgs[annotation["image_id"]]["ls_task_id"]]].add(annotation["ls_region_id"])
        expected_mask = region_to_mask(regions[annotation["ls_region_id"]])
        decoded = coco.annToMask(annotation).astype(bool)
        assert (decoded & expected_mask).sum() / (decoded | expected_mask).sum() >= MIN_IOU
    assert kept == expected
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(json.loads(json.dumps(converted.results)))
    for detection in detections.dataset["annotations"]:
        decoded = detections.annToMask(detection).astype(bool)
        expected_mask = region_to_mask(regions[detection["ls_region_id"]])
        assert (decoded & expected_mask).sum() / (decoded | expected_mask).sum() >= MIN_IOU
    # The upload's size comes from Label Studio's media folder once no region gives it.
    without_regions = json.loads(json.dumps(fixture_project.export))
    without_regions[0]["annotations"][0]["result"] = []
    dataset = label_studio_export_to_coco(without_regions, fixture_project.config, folders=fixture_project.folders)
    assert dataset.dataset["images"][0]["file_name"].startswith(f"upload/{fixture_project.project_id}/")
    assert (dataset.dataset["images"][0]["width"], dataset.dataset["images"][0]["height"]) == (80, 60)


def test_round_trip_coco_to_label_studio_and_back(
    fixture_project: FixtureProject, label_studio: LabelStudioServer, ls_client: LabelStudio, tmp_path: Path
) -> None:
    """COCO (from the fixture) → coco2ls tasks → Label Studio import → predictions accepted → export →
    ls2coco: the same images, categories and objects."""
    original = label_studio_export_to_coco(
        fixture_project.export, fixture_project.config, folders=fixture_project.folders
    ).dataset
    tasks = coco_to_label_studio_tasks(original, fixture_project.config)
    project = ls_client.projects.create(title="COCO round trip", label_config=fixture_project.config)
    response = requests.post(
        f"{label_studio.url}/api/projects/{project.id}/import",
        headers={"Authorization": f"Token {label_studio.token}"},
        json=tasks,
        timeout=60,
    )
    response.raise_for_status()
    Workflow(ls_client, label_studio.url, label_studio.token).accept_predictions(project.id)
    export = fixture_project.builder.snapshot_export(ls_client, project.id)
    # Each region came back as the type it left as (rectangles as rectangles, brush as brush).
    types = [sorted(r["type"] for r in t["annotations"][0]["result"]) for t in export]
    assert types == [sorted(r["type"] for r in t["predictions"][0]["result"]) for t in tasks]
    # The negative's empty prediction became an empty annotation; its size comes from its file.
    back = label_studio_export_to_coco(export, fixture_project.config, folders=fixture_project.folders).dataset

    assert back["categories"] == original["categories"]
    strip = ("id", "ls_task_id")
    assert [{k: v for k, v in i.items() if k not in strip} for i in back["images"]] == [
        {k: v for k, v in i.items() if k not in strip} for i in original["images"]
    ]
    first, second = _load(original, tmp_path, "original.json"), _load(back, tmp_path, "back.json")
    for image_id in first.getImgIds():
        before = first.loadAnns(first.getAnnIds(imgIds=[image_id]))
        after = second.loadAnns(second.getAnnIds(imgIds=[image_id]))
        assert [a["category_id"] for a in after] == [a["category_id"] for a in before]
        for a, b in zip(before, after, strict=True):
            assert type(a["segmentation"]) is type(b["segmentation"])
            assert np.allclose(a["bbox"], b["bbox"], atol=0.01)
            mask_a, mask_b = first.annToMask(a).astype(bool), second.annToMask(b).astype(bool)
            assert (mask_a & mask_b).sum() / (mask_a | mask_b).sum() >= MIN_IOU
            if isinstance(a["segmentation"], dict):
                assert np.array_equal(mask_a, mask_b)  # brush masks survive bit for bit


def test_label_studio_own_coco_export_of_the_same_project(
    fixture_project: FixtureProject, ls_client: LabelStudio
) -> None:
    """What Label Studio 1.23.2's COCO export keeps and loses on the fixture project (README comparison)."""
    studio = json_member(fixture_project.builder.snapshot_export(ls_client, fixture_project.project_id, "COCO"))
    ours = label_studio_export_to_coco(
        fixture_project.export, fixture_project.config, annotations="all", folders=fixture_project.folders
    ).dataset
    names = {c["id"]: c["name"] for c in studio["categories"]}
    studio_annotations = studio["annotations"]
    # Ids from 0; choices become categories; one image entry per annotation (the day and night scenes
    # twice, each annotator's objects on its own copy), the cancelled annotation left out, unannotated kept.
    assert min(a["id"] for a in studio_annotations) == 0 and min(i["id"] for i in studio["images"]) == 0
    assert {"good", "blurry"} <= set(names.values())
    assert len(studio["images"]) == 7 and len(ours["images"]) == 4
    # Brush regions are lost; rectangles come without segmentation; the keypoint is kept as COCO keypoints.
    labelled = [names[a["category_id"]] for a in studio_annotations]
    assert "Road" not in labelled and "Sky" not in labelled
    assert all(a["segmentation"] == [] for a in studio_annotations if names[a["category_id"]] in ("Sign", "Truck"))
    assert sum("keypoints" in a for a in studio_annotations) == 1
    # A rotated box on the 80x60 image: Label Studio rotates in percent units, so its box is off.
    truck = next(a for a in ours["annotations"] if a["ls_region_id"] == "tRuck1")
    studio_trucks = [a["bbox"] for a in studio_annotations if names[a["category_id"]] == "Truck"]
    assert max(_box_iou(box, truck["bbox"]) for box in studio_trucks) < 0.9
    # Every polygon Label Studio keeps rasterises like ours.
    polygons = [a for a in studio_annotations if a.get("segmentation")]
    ours_polygons = [
        a
        for a in ours["annotations"]
        if isinstance(a["segmentation"], list) and a["ls_region_id"] in {"c4rP0l", "p3rS0n", "n1Car0"}
    ]
    assert len(polygons) == len(ours_polygons) == 3


def _box_iou(a: list[float], b: list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)
