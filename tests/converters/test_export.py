"""Label Studio JSON export → COCO: the realistic fixture, predictions, malformed exports (API and CLI)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pycocotools.coco import COCO

from converters.coco import ExportFormatError, label_studio_export_to_coco
from converters.polygons import polygons_to_mask
from tests.converters.shapes import iou

ROOT = Path(__file__).resolve().parents[2]


def _coco(document: dict, tmp_path: Path) -> COCO:
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(document))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _polygon_mask(points: list, builder: ModuleType) -> np.ndarray:
    pixels = np.asarray(points) * [builder.WIDTH / 100, builder.HEIGHT / 100]
    return polygons_to_mask([pixels], builder.HEIGHT, builder.WIDTH)


def test_fixture_file_is_what_the_script_builds(export: list[dict], export_builder: ModuleType) -> None:
    assert export == json.loads(json.dumps(export_builder.build_export()))


def test_annotations_convert_to_coco_that_matches_the_source_masks(
    export: list[dict], label_config: str, export_builder: ModuleType, tmp_path: Path
) -> None:
    coco = _coco(label_studio_export_to_coco(export, label_config), tmp_path)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["Car", "Person", "Road", "Sky"]
    # Task 3 has no regions and no known size; the cancelled annotation of task 2 is skipped.
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco.dataset["images"]] == [
        (1, "a1b2c3d4-scene.png", 80, 60),
        (2, "e5f6a7b8-street.png", 80, 60),
    ]
    by_category = {coco.loadCats(a["category_id"])[0]["name"]: a for a in coco.dataset["annotations"]}
    assert len(coco.dataset["annotations"]) == 4 and set(by_category) == {"Car", "Person", "Road", "Sky"}
    sources = export_builder.source_masks()
    car = coco.annToMask(by_category["Car"]).astype(bool)
    assert np.array_equal(car, _polygon_mask(export_builder.CAR_POINTS, export_builder))
    person = coco.annToMask(by_category["Person"]).astype(bool)
    assert np.array_equal(person, _polygon_mask(export_builder.PERSON_POINTS, export_builder))
    road = coco.annToMask(by_category["Road"]).astype(bool)
    assert np.array_equal(road, sources[(1, "bR0aD1")])  # the hole survives: RLE
    assert isinstance(by_category["Road"]["segmentation"], dict)
    sky = coco.annToMask(by_category["Sky"]).astype(bool)
    assert iou(sky, sources[(2, "sKy9x2")]) >= 0.98
    assert by_category["Sky"]["image_id"] == 2 and "score" not in by_category["Sky"]


def test_predictions_convert_with_scores(
    export: list[dict], label_config: str, export_builder: ModuleType, tmp_path: Path
) -> None:
    coco = _coco(label_studio_export_to_coco(export, label_config, predictions=True), tmp_path)
    assert [i["file_name"] for i in coco.dataset["images"]] == ["a1b2c3d4-scene.png"]
    person, sky = coco.dataset["annotations"]
    assert (person["score"], sky["score"]) == (0.9, 0.6)
    assert np.array_equal(coco.annToMask(sky).astype(bool), export_builder.source_masks()[(1, "pSky01")])


def test_prediction_score_is_the_fallback_and_image_sizes_add_empty_tasks(
    export: list[dict], label_config: str
) -> None:
    del export[0]["predictions"][0]["result"][1]["score"]
    document = label_studio_export_to_coco(
        export, label_config, predictions=True, image_sizes={3: (80, 60), "e5f6a7b8-street.png": (80, 60)}
    )
    assert [a["score"] for a in document["annotations"]] == [0.9, 0.73]
    assert [i["file_name"] for i in document["images"]] == [
        "a1b2c3d4-scene.png",
        "e5f6a7b8-street.png",
        "c9d0e1f2-empty.png",
    ]


def _region(export: list[dict], task: int, annotation: int, region: int) -> dict:
    return export[task]["annotations"][annotation]["result"][region]


MALFORMED = [
    (lambda e: e[0]["annotations"][0].pop("result"), r"task 1, annotation 10: 'result' must be a list"),
    (
        lambda e: e[0]["annotations"][0].update(result="oops"),
        r"task 1, annotation 10: 'result' must be a list",
    ),
    (lambda e: e[0].update(annotations={"id": 1}), r"task 1: 'annotations' must be a list"),
    (lambda e: e[1].update(data="x.png"), r"task 2: 'data' must be a JSON object"),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(points=[[1, 2], ["a", 3], [4, 5]]),
        r"task 1, region 'c4rP0l': point 1 is not an \[x, y\] pair of numbers",
    ),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(points="1,2 3,4"),
        r"task 1, region 'c4rP0l': a polygon needs a list of >= 3 points",
    ),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(polygonlabels=["Bus"]),
        r"task 1, region 'c4rP0l': labels \['Bus'\] are not in control 'poly'",
    ),
    (
        lambda e: _region(e, 0, 0, 1)["value"].update(rle=[1, 2, "3"]),
        r"task 1, region 'bR0aD1': brush rle must be a non-empty list of ints",
    ),
    (
        lambda e: _region(e, 0, 0, 1).update(original_width="80"),
        r"task 1, region 'bR0aD1': original_width must be a positive integer, got '80'",
    ),
    (
        lambda e: [r.pop("original_height") for r in e[1]["annotations"][1]["result"]],
        r"task 2, region 'sKy9x2': original_width/original_height missing or invalid",
    ),
    (
        lambda e: _region(e, 1, 1, 0).update(value=None),
        r"task 2, region 'sKy9x2': 'value' must be a JSON object",
    ),
    (
        lambda e: e[1]["annotations"][1]["result"].append(7),
        r"task 2, annotation 12: a region is not a JSON object",
    ),
    (lambda e: e.append("task"), r"task #3: must be a JSON object"),
]


@pytest.mark.parametrize(("breaks", "message"), MALFORMED)
def test_malformed_exports_name_task_and_region(
    export: list[dict], label_config: str, breaks, message
) -> None:
    breaks(export)
    with pytest.raises(ExportFormatError, match=f"^{message}"):
        label_studio_export_to_coco(export, label_config)


def test_export_must_be_a_list_and_config_must_have_mask_controls(label_config: str) -> None:
    with pytest.raises(ExportFormatError, match="export must be a JSON list of tasks, got dict"):
        label_studio_export_to_coco({"tasks": []}, label_config)
    choices_only = (
        '<View><Image name="i" value="$image"/>'
        '<Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    )
    with pytest.raises(ExportFormatError, match="no PolygonLabels or BrushLabels control"):
        label_studio_export_to_coco([], choices_only)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converters", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_converts_annotations_and_predictions(export_path: Path, tmp_path: Path) -> None:
    config = export_path.with_name("label_config.xml")
    for flags, expected_images in (([], 2), (["--predictions"], 1)):
        out = tmp_path / f"coco{len(flags)}.json"
        done = _cli("ls2coco", str(export_path), "--config", str(config), "--out", str(out), *flags)
        assert done.returncode == 0, done.stderr
        assert f"{expected_images} images" in done.stdout
        assert len(_coco(json.loads(out.read_text()), tmp_path).dataset["images"]) == expected_images


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_reports_malformed_exports_in_one_line_with_exit_2(
    export: list[dict], export_path: Path, tmp_path: Path
) -> None:
    config = str(export_path.with_name("label_config.xml"))
    _region(export, 0, 0, 0)["value"]["points"][1] = ["a", 3]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(export))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(export_path.read_text()[:5000])
    cases = [
        (broken, r"error: task 1, region 'c4rP0l': point 1 is not an [x, y] pair of numbers"),
        (truncated, f"error: {truncated} is not valid JSON (truncated or corrupt?)"),
        (tmp_path / "missing.json", "error: cannot read"),
    ]
    for path, message in cases:
        done = _cli("ls2coco", str(path), "--config", config, "--out", str(tmp_path / "out.json"))
        assert done.returncode == 2
        assert done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out.json").exists()
