"""Label Studio JSON export → YOLO segmentation (``ls2yolo``), read back and rasterised against the Label Studio
export made by the real Label Studio (data/make_export.py)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from converters.__main__ import main
from converters.images import ImageFolders
from converters.labelstudio import region_to_mask
from converters.ls2coco import ExportFormatError
from converters.ls2yolo import label_studio_export_to_yolo, read_label_file
from converters.polygons import polygons_to_mask
from tests.converters.conftest import FixtureImages
from tests.converters.shapes import filled, iou
from tests.converters.test_export import GROUND_TRUTH

CONFIG_ORDER = ["Car", "Person", "Road", "Sky", "Sign", "Truck"]


def _convert(export: list[dict], config: str, images: FixtureImages, **options):
    folders = ImageFolders(images.document_root, images.media_root)
    return label_studio_export_to_yolo(export, config, folders=folders, **options)


def _regions(export: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for task in export for a in task["annotations"] for r in a["result"]}


def test_yolo_labels_read_back_to_the_label_studio_masks(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    converted = _convert(export, label_config, fixture_images)
    assert converted.names == CONFIG_ORDER
    regions = _regions(export)
    expected_files = {
        1: "labels/upload/1/00000000-street.txt",
        2: "labels/coco-fixture/day/scene.txt",
        3: "labels/coco-fixture/night/scene.txt",
        4: "labels/coco-fixture/day/empty.txt",
    }
    assert set(converted.labels) == set(expected_files.values())
    for task, path in expected_files.items():
        lines = read_label_file(converted.labels[path], 80, 60)
        text = converted.labels[path]
        assert all(0 <= float(v) <= 1 for line in text.splitlines() for v in line.split()[1:])
        # Per class: the union of the lines' rasterisations is the union of the regions' masks (holes filled).
        got: dict[str, np.ndarray] = {}
        for class_id, ring in lines:
            mask = polygons_to_mask([ring], 60, 80)
            got[CONFIG_ORDER[class_id]] = got.get(CONFIG_ORDER[class_id], np.zeros((60, 80), bool)) | mask
        want: dict[str, np.ndarray] = {}
        for region_id in GROUND_TRUTH[task]:
            region = regions[region_id]
            (label,) = region["value"][region["type"]]
            want[label] = want.get(label, np.zeros((60, 80), bool)) | filled(region_to_mask(region))
        assert set(got) == set(want), task
        for label in want:
            exact = regions_types(regions, GROUND_TRUTH[task], label) != {"brushlabels"}
            assert iou(got[label], want[label]) >= (1.0 if exact else 0.99), (task, label)
    assert converted.labels[expected_files[4]] == ""  # a submitted empty annotation: a negative image


def regions_types(regions: dict[str, dict], ids: set[str], label: str) -> set[str]:
    return {regions[i]["type"] for i in ids if regions[i]["value"][regions[i]["type"]] == [label]}


def test_brush_pieces_become_one_line_each_and_holes_are_filled(
    export: list[dict], label_config: str, fixture_images: FixtureImages, export_builder
) -> None:
    mask = np.zeros((60, 80), bool)
    mask[5:20, 5:30] = True
    mask[10:15, 10:20] = False  # a hole
    mask[30:50, 50:75] = True  # a second piece
    region = export_builder.brush("tw0pcs", mask, "Road")
    export[0]["annotations"][0]["result"] = [region]
    converted = _convert(export, label_config, fixture_images)
    lines = read_label_file(converted.labels["labels/upload/1/00000000-street.txt"], 80, 60)
    assert [class_id for class_id, _ in lines] == [2, 2]
    union = polygons_to_mask([ring for _, ring in lines], 60, 80)
    assert np.array_equal(union, filled(mask))


def test_non_square_rotated_rectangles_are_their_corners_cut_to_the_image(
    export: list[dict], label_config: str, fixture_images: FixtureImages, export_builder
) -> None:
    box = export_builder.box("r0t8ed", (70.0, 50.0, 40.0, 30.0, 30.0), "Truck")  # runs past the right edge
    export[0]["annotations"][0]["result"] = [box]
    text = _convert(export, label_config, fixture_images).labels["labels/upload/1/00000000-street.txt"]
    ((class_id, ring),) = read_label_file(text, 80, 60)
    assert class_id == 5 and ring[:, 0].max() == pytest.approx(80.0) and len(ring) > 4
    assert np.array_equal(polygons_to_mask([ring], 60, 80), region_to_mask(box))


def test_yolo_refuses_all_annotations_and_names_bad_regions(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    with pytest.raises(ExportFormatError, match="annotations must be one of"):
        _convert(export, label_config, fixture_images, annotations="all")
    broken = copy.deepcopy(export)
    broken[0]["annotations"][0]["result"][1]["value"]["rle"][10:] = []
    with pytest.raises(ExportFormatError, match=r"^task 1, annotation 1, region 'bR0aD1': brush rle is corrupt"):
        _convert(broken, label_config, fixture_images)


def test_cli_writes_data_yaml_and_one_label_file_per_image(
    export_path: Path, fixture_images: FixtureImages, tmp_path: Path
) -> None:
    out = tmp_path / "yolo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["ls2yolo", str(export_path), "--config", str(export_path.with_name("label_config.xml")),
                     "--out", str(out), "--document-root", str(fixture_images.document_root), "--keep-unannotated"])
    assert code == 0
    assert printed.getvalue().splitlines()[0] == f"wrote {out}: data.yaml, 5 label files, 6 polygons, 6 classes"
    yaml = (out / "data.yaml").read_text().splitlines()
    assert yaml[1:] == [f"path: {json.dumps(str(out))}", "train: images", "val: images", "nc: 6", "names:",
                        *(f'  {i}: "{name}"' for i, name in enumerate(CONFIG_ORDER))]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt"))
    assert files == sorted([
        "labels/upload/1/00000000-street.txt", "labels/coco-fixture/day/scene.txt",
        "labels/coco-fixture/night/scene.txt", "labels/coco-fixture/day/empty.txt",
        "labels/coco-fixture/day/unlabelled.txt",
    ])
    assert (out / "labels/coco-fixture/day/unlabelled.txt").read_text() == ""
