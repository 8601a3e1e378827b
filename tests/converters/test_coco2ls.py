"""COCO → Label Studio tasks (coco2ls): which region each annotation becomes, and the round trip back
through ls2coco without a Label Studio (the real one is in tests/e2e/test_coco_e2e.py)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from converters.coco2ls import CocoFormatError, coco_to_label_studio_tasks
from converters.images import ImageFolders
from converters.ls2coco import label_studio_export_to_coco
from tests.converters.conftest import FixtureImages

BOX_ONLY = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="thing"/></RectangleLabels><PolygonLabels name="poly" toName="image">'
    '<Label value="thing"/></PolygonLabels></View>'
)


def _dataset(*annotations: dict) -> dict:
    return {
        "images": [{"id": 1, "file_name": "a b/x.png", "width": 40, "height": 30}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [{"id": i, "image_id": 1, "category_id": 3} | a for i, a in enumerate(annotations, 1)],
    }


def test_round_trip_of_the_fixture_without_label_studio(
    export: list[dict], label_config: str, fixture_images: FixtureImages, tmp_path: Path
) -> None:
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    original = label_studio_export_to_coco(export, label_config, folders=folders).dataset
    tasks = coco_to_label_studio_tasks(original, label_config, image_prefix="/data/local-files/?d=")
    # What "Create Annotations From Predictions" does, then an export: ids and the annotation added.
    accepted = [
        task | {"id": index, "annotations": [{"id": index, "result": task["predictions"][0]["result"]}]}
        for index, task in enumerate(tasks, start=1)
    ]
    back = label_studio_export_to_coco(accepted, label_config, folders=folders).dataset
    kinds = [sorted(r["type"] for r in t["predictions"][0]["result"]) for t in tasks]
    assert kinds[:2] == [["brushlabels", "polygonlabels", "rectanglelabels"], ["polygonlabels", "rectanglelabels"]]
    assert back["categories"] == original["categories"]
    assert [i["file_name"] for i in back["images"]] == [i["file_name"] for i in original["images"]]
    first, second = _load(original, tmp_path / "a.json"), _load(back, tmp_path / "b.json")
    assert len(first.getAnnIds()) == len(second.getAnnIds())
    for before, after in zip(first.loadAnns(first.getAnnIds()), second.loadAnns(second.getAnnIds()), strict=True):
        assert (before["image_id"], before["category_id"]) == (after["image_id"], after["category_id"])
        assert np.allclose(before["bbox"], after["bbox"], atol=0.01)
        mask_before, mask_after = first.annToMask(before), second.annToMask(after)
        assert (mask_before & mask_after).sum() / (mask_before | mask_after).sum() >= 0.99


def _load(document: dict, path: Path) -> COCO:
    path.write_text(json.dumps(document))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_boxes_and_rectangular_rings_become_rectangles_other_rings_polygons() -> None:
    clockwise = [5.0, 5.0, 25.0, 5.0, 25.0, 20.0, 5.0, 20.0]
    counter_clockwise = [5.0, 5.0, 5.0, 20.0, 25.0, 20.0, 25.0, 5.0]
    (task,) = coco_to_label_studio_tasks(
        _dataset(
            {"bbox": [2.0, 3.0, 10.0, 6.0], "score": 0.5},
            {"segmentation": [clockwise]},
            {"segmentation": [counter_clockwise]},
            {"segmentation": [[1.0, 1.0, 9.0, 1.0, 5.0, 8.0]]},
        ),
        BOX_ONLY,
        image_prefix="/data/local-files/?d=",
    )
    assert task["data"] == {"image": "/data/local-files/?d=a%20b/x.png"}
    box, rectangle, reversed_rectangle, triangle = task["predictions"][0]["result"]
    assert box["type"] == "rectanglelabels" and box["score"] == 0.5
    assert box["value"] == {
        "x": 5.0,
        "y": 10.0,
        "width": 25.0,
        "height": 20.0,
        "rotation": 0.0,
        "rectanglelabels": ["thing"],
    }
    assert rectangle["type"] == "rectanglelabels"
    assert reversed_rectangle["type"] == triangle["type"] == "polygonlabels"
    assert task["predictions"][0]["score"] == 0.5


@pytest.mark.parametrize(
    ("annotation", "config", "message"),
    [
        (
            {"segmentation": {"size": [30, 40], "counts": "0"}},
            BOX_ONLY,
            "segmentation cannot be decoded \\(not a valid RLE\\)",
        ),
        (
            {"segmentation": [[1.0, 1.0, 9.0, 1.0, 5.0, 8.0], [20.0, 1.0, 29.0, 1.0, 25.0, 8.0]]},
            BOX_ONLY,
            "a mask with holes or several parts needs a BrushLabels control holding 'thing'",
        ),
        ({"segmentation": [[1.0, 1.0, "x", 1.0, 5.0, 8.0]]}, BOX_ONLY, "ring must be >= 3"),
        ({"segmentation": {"size": [3000, 4000], "counts": "0"}}, BOX_ONLY, r"RLE of size \[30, 40\]"),
        ({"segmentation": {"size": [30, 40], "counts": [5, 10]}}, BOX_ONLY, "run lengths do not add up"),
        ({"bbox": [0, 0, 0, 5]}, BOX_ONLY, "no valid bbox"),
        ({"bbox": [0, 0, 5, 5]}, BOX_ONLY.replace("RectangleLabels", "BrushLabels"), "a box needs a RectangleLabels"),
    ],
)
def test_annotations_that_fit_no_control_are_refused_by_id(annotation: dict, config: str, message: str) -> None:
    with pytest.raises(CocoFormatError, match=f"^annotation 1: region 'coco1': .*({message})"):
        coco_to_label_studio_tasks(_dataset(annotation), config)


def test_malformed_coco_files_are_refused() -> None:
    with pytest.raises(CocoFormatError, match="has no 'images' list"):
        coco_to_label_studio_tasks({"annotations": []}, BOX_ONLY)
    bad_category = _dataset({"bbox": [0, 0, 5, 5]})
    bad_category["categories"] = [{"id": 3, "name": "other"}]
    with pytest.raises(CocoFormatError, match="category 'other' is a label of no"):
        coco_to_label_studio_tasks(bad_category, BOX_ONLY)
    with pytest.raises(CocoFormatError, match="annotation 1: score must be a number, got 'high'"):
        coco_to_label_studio_tasks(_dataset({"bbox": [0, 0, 5, 5], "score": "high"}), BOX_ONLY)
    huge = _dataset()
    huge["images"][0].update(width=100_000, height=100_000)
    with pytest.raises(CocoFormatError, match="positive size of at most"):
        coco_to_label_studio_tasks(huge, BOX_ONLY)
    orphan = _dataset({"bbox": [0, 0, 5, 5], "image_id": 9})
    with pytest.raises(CocoFormatError, match="image_id 9 is not an image"):
        coco_to_label_studio_tasks(orphan, BOX_ONLY)
