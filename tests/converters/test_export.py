"""Label Studio JSON export → COCO, on the fixture export made by the real Label Studio 1.23.2 (see
data/make_export.py): every region checked against its rasterisation, each selection and naming rule,
predictions and COCOeval, malformed exports (API and CLI)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from converters.evaluate import EvaluationInputError, evaluate
from converters.images import ImageFolders, relative_name, unique_names
from converters.label_config import LabelConfigError, parse_label_config
from converters.labelstudio import region_to_mask
from converters.ls2coco import CocoExport, ExportFormatError, category_ids, label_studio_export_to_coco
from tests.converters.conftest import FixtureImages
from tests.converters.shapes import filled, iou

ROOT = Path(__file__).resolve().parents[2]
# Region ids of the fixture (data/make_export.py) per task, as each selection should keep them.
GROUND_TRUTH = {1: {"c4rP0l", "bR0aD1", "s1gN01"}, 2: {"tRuck1", "p3rS0n"}, 3: {"n1Car0"}, 4: set()}
LATEST = GROUND_TRUTH | {2: {"tRuck2"}}
ALL = GROUND_TRUTH | {2: {"tRuck1", "p3rS0n", "tRuck2"}, 3: {"n1Car0", "sKy9x2"}}


def _convert(export: list[dict], config: str, images: FixtureImages | None, **options) -> CocoExport:
    folders = ImageFolders(images.document_root, images.media_root) if images else None
    return label_studio_export_to_coco(export, config, folders=folders, **options)


def _load(document: dict | list, tmp_path: Path, name: str = "coco.json") -> COCO:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _regions_by_id(export: list[dict]) -> dict[str, dict]:
    regions = {}
    for task in export:
        for entry in [*task["annotations"], *task["predictions"]]:
            regions.update({region["id"]: region for region in entry["result"]})
    return regions


def _kept_regions(coco: COCO) -> dict[int, set[str]]:
    kept: dict[int, set[str]] = {image["ls_task_id"]: set() for image in coco.dataset["images"]}
    for annotation in coco.dataset["annotations"]:
        kept[coco.imgs[annotation["image_id"]]["ls_task_id"]].add(annotation["ls_region_id"])
    return kept


@pytest.mark.parametrize("encoding", ["auto", "polygon", "rle"])
def test_every_region_becomes_one_annotation_equal_to_its_rasterisation(
    export: list[dict],
    label_config: str,
    fixture_images: FixtureImages,
    export_builder: ModuleType,
    tmp_path: Path,
    encoding: str,
) -> None:
    coco = _load(_convert(export, label_config, fixture_images, encoding=encoding).dataset, tmp_path)
    regions = _regions_by_id(export)
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    assert _kept_regions(coco) == GROUND_TRUTH
    for annotation in coco.dataset["annotations"]:
        region = regions[annotation["ls_region_id"]]
        expected = region_to_mask(region)
        decoded = coco.annToMask(annotation).astype(bool)
        holes = region["id"] == "bR0aD1"
        if encoding == "polygon" and holes:
            assert iou(decoded, filled(expected)) >= 0.99  # polygons cannot hold the hole
        else:
            assert iou(decoded, expected) >= 0.99, region["id"]
        assert isinstance(annotation["segmentation"], dict) == (encoding == "rle" or (encoding == "auto" and holes))
        assert names[annotation["category_id"]] == region["value"][region["type"]][0]
        assert annotation["area"] == decoded.sum() and annotation["iscrowd"] == 0
    # The brush masks are the painted ones, bit for bit, and the rasterised polygons match OpenCV's
    # independent drawing of the clicked points to within the pixels their edges cross.
    road = next(a for a in coco.dataset["annotations"] if a["ls_region_id"] == "bR0aD1")
    if encoding != "polygon":
        assert np.array_equal(coco.annToMask(road).astype(bool), export_builder.source_masks()["bR0aD1"])


def test_rectangles_keep_the_drawn_box_and_their_rotated_corners(
    export: list[dict], label_config: str, fixture_images: FixtureImages, export_builder: ModuleType
) -> None:
    dataset = _convert(export, label_config, fixture_images).dataset
    by_region = {a["ls_region_id"]: a for a in dataset["annotations"]}
    width, height = export_builder.WIDTH, export_builder.HEIGHT
    x, y, w, h, _ = export_builder.SIGN_BOX
    sign = [x * width / 100, y * height / 100, w * width / 100, h * height / 100]
    assert by_region["s1gN01"]["bbox"] == pytest.approx(sign)
    assert by_region["s1gN01"]["segmentation"] == [
        pytest.approx(
            [
                sign[0],
                sign[1],
                sign[0] + sign[2],
                sign[1],
                sign[0] + sign[2],
                sign[1] + sign[3],
                sign[0],
                sign[1] + sign[3],
            ]
        )
    ]
    # Rotated 30° clockwise about the top-left corner (16, 12): width 32 px, height 18 px.
    x, y, w, h, rotation = export_builder.TRUCK_BOXES["ground truth"]
    left, top, along, across = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    angle = np.radians(rotation)
    corners = np.array([[0, 0], [along, 0], [along, across], [0, across]]) @ np.array(
        [[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]
    ) + [left, top]
    truck = by_region["tRuck1"]
    assert np.allclose(np.reshape(truck["segmentation"][0], (-1, 2)), corners, atol=1e-3)
    assert truck["bbox"] == pytest.approx(
        [*corners.min(axis=0), *(corners.max(axis=0) - corners.min(axis=0))], abs=1e-3
    )


def test_categories_follow_the_config_with_category_attributes(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    dataset = _convert(export, label_config, fixture_images).dataset
    # Car has category="7"; the rest take free ids from 1 in config order; the keypoint label is none.
    # Sky is used by no ground-truth annotation and is still a category.
    assert [(c["name"], c["id"]) for c in dataset["categories"]] == [
        ("Car", 7),
        ("Person", 1),
        ("Road", 2),
        ("Sky", 3),
        ("Sign", 4),
        ("Truck", 5),
    ]
    assert "Sky" not in {
        c["name"] for c in dataset["categories"] if c["id"] in {a["category_id"] for a in dataset["annotations"]}
    }


def test_category_attributes_must_be_unique_integers() -> None:
    def config(*labels: str) -> list:
        body = "".join(labels)
        return parse_label_config(
            f'<View><Image name="i" value="$image"/><PolygonLabels name="p" toName="i">{body}</PolygonLabels>'
            f'<RectangleLabels name="r" toName="i"><Label value="a" category="2"/></RectangleLabels></View>'
        )

    assert category_ids(config('<Label value="a" category="2"/>', '<Label value="b"/>')) == {"a": 2, "b": 1}
    with pytest.raises(LabelConfigError, match='category="x"'):
        category_ids(config('<Label value="b" category="x"/>'))
    with pytest.raises(LabelConfigError, match="category ids \\[2\\] are given to several labels"):
        category_ids(config('<Label value="b" category="2"/>'))
    with pytest.raises(LabelConfigError, match="label 'a' has two different category ids"):
        category_ids(config('<Label value="a" category="3"/>'))


@pytest.mark.parametrize(("selection", "expected"), [("ground-truth", GROUND_TRUTH), ("latest", LATEST), ("all", ALL)])
def test_which_annotations(
    export: list[dict], label_config: str, fixture_images: FixtureImages, tmp_path: Path, selection: str, expected
) -> None:
    """Task 2: a ground-truth annotation, a newer one by a second annotator, a cancelled one. Task 3: the
    first annotation was edited after the second was made, so it is the latest."""
    coco = _load(_convert(export, label_config, fixture_images, annotations=selection).dataset, tmp_path)
    assert _kept_regions(coco) == expected
    night = next(a for a in coco.dataset["annotations"] if a["ls_region_id"] == "n1Car0")
    assert night["ls_annotation_id"] == 5  # the edited one


def test_images_negatives_kept_unannotated_left_out_names_unique(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    converted = _convert(export, label_config, fixture_images)
    assert [(i["ls_task_id"], i["file_name"], i["width"], i["height"]) for i in converted.dataset["images"]] == [
        (1, "upload/1/00000000-street.png", 80, 60),
        (2, "coco-fixture/day/scene.png", 80, 60),  # shares its base name with the night scene
        (3, "coco-fixture/night/scene.png", 80, 60),
        (4, "coco-fixture/day/empty.png", 80, 60),  # submitted without regions: a negative, size from the file
    ]
    assert converted.unannotated == [5]
    assert converted.skipped == Counter({"keypointlabels": 1, "choices": 1})
    kept = _convert(export, label_config, fixture_images, keep_unannotated=True).dataset
    assert kept["images"][-1]["file_name"] == "coco-fixture/day/unlabelled.png"


def test_sizes_of_tasks_without_regions_come_from_the_files_or_an_error_names_them(
    export: list[dict], label_config: str, fixture_images: FixtureImages, tmp_path: Path
) -> None:
    with pytest.raises(ExportFormatError, match=r"^image size unknown for tasks \[4\] .*--document-root"):
        _convert(export, label_config, None)
    # The uploaded image's size from Label Studio's media folder once its regions are gone.
    export[0]["annotations"][0]["result"] = []
    dataset = _convert(export, label_config, fixture_images).dataset
    assert (dataset["images"][0]["width"], dataset["images"][0]["height"]) == (80, 60)
    # A file whose size differs from what the regions say is a malformed export.
    root = tmp_path / "root"
    (root / "coco-fixture/day").mkdir(parents=True)
    cv2.imwrite(str(root / "coco-fixture/day/scene.png"), np.zeros((30, 40, 3), np.uint8))
    folders = ImageFolders(root, fixture_images.media_root)
    with pytest.raises(
        ExportFormatError,
        match=r"^task 2, annotation 2, region 'tRuck1': original size 80x60 differs from the image file's 40x30",
    ):
        label_studio_export_to_coco(export, label_config, folders=folders, keep_unannotated=False)


def test_relative_names_stay_inside_and_clashes_get_task_prefixes(tmp_path: Path) -> None:
    assert relative_name("/data/upload/3/ab12cd34-a.png") == "upload/3/ab12cd34-a.png"
    assert relative_name("/data/local-files/?d=x/a%20b.png") == "x/a b.png"
    assert relative_name("/data/local-files/?d=../../etc/passwd") == "etc/passwd"
    assert relative_name("s3://bucket/dir/y.png") == "bucket/dir/y.png"
    assert relative_name("https://host/a/../b.png?sig=1") == "host/a/b.png"
    # Two files that land on one name (an upload, and a local file under a folder called upload) are told
    # apart by task; one file shown by two tasks keeps its name.
    names = unique_names(
        {7: "/data/local-files/?d=upload/1/a.png", 3: "/data/upload/1/a.png", 5: "/b.png", 6: "/b.png"}
    )
    assert names == {7: "task-7/upload/1/a.png", 3: "task-3/upload/1/a.png", 5: "b.png", 6: "b.png"}
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"")
    (root / "x" / "link.png").symlink_to(tmp_path / "secret.png")
    folders = ImageFolders(root, root)
    assert folders.path_of("/data/local-files/?d=x/a.png") == (root / "x/a.png").resolve()
    assert folders.path_of("/data/local-files/?d=../secret.png") is None
    assert folders.path_of("/data/local-files/?d=x/link.png") is None  # a symlink out of the root
    assert folders.path_of("/data/upload/../../secret.png") is None
    assert folders.path_of("https://elsewhere/x/a.png") is None


def test_predictions_become_a_load_res_list_beside_the_dataset(
    export: list[dict], label_config: str, fixture_images: FixtureImages, tmp_path: Path
) -> None:
    converted = _convert(export, label_config, fixture_images, predictions=True)
    coco = _load(converted.dataset, tmp_path)
    regions = _regions_by_id(export)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(json.loads(json.dumps(converted.results)))
    by_region = {d["ls_region_id"]: d for d in detections.dataset["annotations"]}
    # Region scores, else the prediction's (the day scene's box has none of its own).
    assert {key: d["score"] for key, d in by_region.items()} == {
        "pP3rs0": 0.9,
        "pSky01": 0.6,
        "pTruck": 0.8,
        "pTrk2": 0.7,
    }
    assert {coco.imgs[d["image_id"]]["ls_task_id"] for d in by_region.values()} == {1, 2}
    for key, detection in by_region.items():
        assert iou(detections.annToMask(detection).astype(bool), region_to_mask(regions[key])) >= 0.99
    only_other = _convert(export, label_config, fixture_images, predictions=True, model_version="other")
    assert only_other.results == []


def test_evaluate_scores_the_ground_truth_as_its_own_detections_ap_1(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    dataset = _convert(export, label_config, fixture_images).dataset
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "segmentation": _as_rle(a, dataset),
        }
        for a in dataset["annotations"]
    ]
    evaluations = evaluate(dataset, results)
    assert [(e.iou_type, round(e.ap, 6)) for e in evaluations] == [("segm", 1.0), ("bbox", 1.0)]
    shifted = [r | {"bbox": [r["bbox"][0] + r["bbox"][2] / 2, *r["bbox"][1:]]} for r in results]
    assert evaluate(dataset, shifted)[1].ap < 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(image_id=99), "detection #0: image_id 99 is not an image of the dataset"),
        (lambda r: r.update(category_id=6), "detection #0: category_id 6 is not a category"),
        (lambda r: r.pop("score"), "detection #0: score must be a number, got None"),
        (lambda r: r.update(segmentation=[[1, 2, 3, 4, 5, 6]]), "detection #0: segmentation must be COCO RLE"),
        (lambda r: r.update(bbox=[1, 2]), r"detection #0: bbox must be \[x, y, width, height\]"),
    ],
)
def test_evaluate_names_the_first_bad_detection(
    export: list[dict], label_config: str, fixture_images: FixtureImages, change, message: str
) -> None:
    converted = _convert(export, label_config, fixture_images, predictions=True)
    change(converted.results[0])
    with pytest.raises(EvaluationInputError, match=f"^{message}"):
        evaluate(converted.dataset, converted.results)
    with pytest.raises(EvaluationInputError, match="the detections list is empty"):
        evaluate(converted.dataset, [])


def _as_rle(annotation: dict, dataset: dict) -> dict:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    rle = coco.annToRLE(coco.anns[annotation["id"]])
    return {
        "size": rle["size"],
        "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"],
    }


def _region(export: list[dict], task: int, annotation: int, region: int) -> dict:
    return export[task]["annotations"][annotation]["result"][region]


MALFORMED = [
    (lambda e: e[0]["annotations"][0].pop("result"), r"task 1, annotation 1: 'result' must be a list"),
    (lambda e: e[0].update(annotations={"id": 1}), r"task 1: 'annotations' must be a list"),
    (lambda e: e[1].update(data="x.png"), r"task 2: 'data' must be a JSON object"),
    (lambda e: e[1].update(data={"img": "x.png"}), r"task 2: data has no image reference under 'image'"),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(points=[[1, 2], ["a", 3], [4, 5]]),
        r"task 1, annotation 1, region 'c4rP0l': point 1 is not an \[x, y\] pair of numbers",
    ),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(polygonlabels=["Bus"]),
        r"task 1, annotation 1, region 'c4rP0l': labels \['Bus'\] are not in control 'poly'",
    ),
    (
        lambda e: _region(e, 0, 0, 0)["value"].update(polygonlabels=["Car", "Person"]),
        r"task 1, annotation 1, region 'c4rP0l': 2 labels \['Car', 'Person'\] on one region",
    ),
    (
        lambda e: _region(e, 0, 0, 1)["value"].update(rle=[1, 2, "3"]),
        r"task 1, annotation 1, region 'bR0aD1': brush rle must be a non-empty list of ints",
    ),
    (
        lambda e: _region(e, 0, 0, 1)["value"].update(rle=_region(e, 0, 0, 1)["value"]["rle"][:-3]),
        r"task 1, annotation 1, region 'bR0aD1': brush rle is corrupt",
    ),
    (
        lambda e: _region(e, 0, 0, 2).update(original_width=81),
        r"task 1, annotation 1, region 's1gN01': original size 81x60 differs from the image's 80x60",
    ),
    (
        lambda e: _region(e, 0, 0, 2)["value"].update(width=0.2, height=0.2),
        r"task 1, annotation 1, region 's1gN01': covers no pixel centre",
    ),
    (
        lambda e: _region(e, 0, 0, 2)["value"].update(rotation="30"),
        r"task 1, annotation 1, region 's1gN01': rectangle rotation must be a finite number",
    ),
    (
        lambda e: _region(e, 0, 0, 2).update(from_name="boxes"),
        r"task 1, annotation 1, region 's1gN01': from_name 'boxes' is not a control",
    ),
    (
        lambda e: e[1]["annotations"][0].update(updated_at="yesterday"),
        r"task 2, annotation 2: timestamp 'yesterday' is not ISO 8601",
    ),
    (lambda e: e.append(copy.deepcopy(e[1])), r"task ids \[2\] appear more than once"),
    (lambda e: e.append("task"), r"task #5: must be a JSON object"),
]


@pytest.mark.parametrize(("breaks", "message"), MALFORMED)
def test_malformed_exports_name_task_annotation_and_region(
    export: list[dict], label_config: str, fixture_images: FixtureImages, breaks, message
) -> None:
    breaks(export)
    with pytest.raises(ExportFormatError, match=f"^{message}"):
        _convert(export, label_config, fixture_images)


def test_predictions_listed_by_id_only_are_refused(export: list[dict], label_config: str, fixture_images) -> None:
    export[0]["predictions"] = [1]  # what Label Studio's quick GET export writes
    _convert(export, label_config, fixture_images)  # annotations alone do not need them
    with pytest.raises(ExportFormatError, match=r"^task 1: predictions are listed by id only"):
        _convert(export, label_config, fixture_images, predictions=True)


def test_export_must_be_a_list_and_config_must_have_region_controls(label_config: str) -> None:
    with pytest.raises(ExportFormatError, match="export must be a JSON list of tasks, got dict"):
        label_studio_export_to_coco({"tasks": []}, label_config)
    choices_only = (
        '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    )
    with pytest.raises(ExportFormatError, match="no PolygonLabels, BrushLabels or RectangleLabels control"):
        label_studio_export_to_coco([], choices_only)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converters", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_converts_and_evaluates(export_path: Path, fixture_images: FixtureImages, tmp_path: Path) -> None:
    config = export_path.with_name("label_config.xml")
    out = tmp_path / "coco.json"
    done = _cli(
        "ls2coco",
        str(export_path),
        "--config",
        str(config),
        "--out",
        str(out),
        "--predictions",
        "--document-root",
        str(fixture_images.document_root),
        "--annotations",
        "all",
        "--encoding",
        "rle",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"wrote {out}: 4 images, 8 annotations, 6 categories",
        f"wrote {tmp_path / 'coco.results.json'}: 4 detections",
        "skipped (no COCO counterpart): choices 1, keypointlabels 1",
        "left out 1 unannotated tasks (--keep-unannotated keeps them)",
    ]
    assert all(isinstance(a["segmentation"], dict) for a in json.loads(out.read_text())["annotations"])
    done = _cli("evaluate", str(out), str(tmp_path / "coco.results.json"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("segm: AP ") and "bbox: AP " in done.stdout
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in lines[1]


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_reports_bad_input_in_one_line_with_exit_2(
    export: list[dict], export_path: Path, fixture_images: FixtureImages, tmp_path: Path
) -> None:
    config = str(export_path.with_name("label_config.xml"))
    _region(export, 0, 0, 2)["value"].update(width=0.2, height=0.2)
    sliver = tmp_path / "sliver.json"
    sliver.write_text(json.dumps(export))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(export_path.read_text()[:5000])
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    root = ["--document-root", str(fixture_images.document_root)]
    cases = [
        (
            ["ls2coco", str(sliver), "--config", config, *root],
            "error: task 1, annotation 1, region 's1gN01': covers no pixel centre",
        ),
        (
            ["ls2coco", str(truncated), "--config", config, *root],
            f"error: {truncated} is not valid JSON (truncated or corrupt?)",
        ),
        (["ls2coco", str(tmp_path / "missing.json"), "--config", config], "error: cannot read"),
        (["ls2coco", str(export_path), "--config", config], "error: image size unknown for tasks [4]"),
        (["evaluate", str(export_path), str(results)], "error: the dataset must be a JSON object"),
        (["coco2ls", str(export_path), "--config", config], "error: COCO file must be a JSON object"),
    ]
    for args, message in cases:
        out = ["--out", str(tmp_path / "out.json")] if args[0] != "evaluate" else []
        done = _cli(*args, *out)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "out.json").exists()
