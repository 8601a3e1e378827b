"""Hostile and boundary input to the converters (issue 19 items 4, 10-13, 18; issue 18's converter survivors):
each case a clear error naming the region or entry, or exit 2 with one ``error:`` line, never a traceback; and
the scoring rules pinned (every piece scored, ties broken by id, category ids that never collide)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from converters.__main__ import main
from converters.brush import max_rle_bytes
from converters.coco import CocoBuilder
from converters.coco2ls import CocoFormatError, coco_to_label_studio_tasks
from converters.evaluate import EvaluationInputError, evaluate
from converters.images import ImageFolders, relative_name
from converters.label_config import parse_label_config
from converters.labelstudio import (
    MAX_PIXELS,
    InvalidRegionError,
    polygon_regions,
    rectangle_pixels,
    rectangle_region,
    region_to_mask,
    validate_regions,
)
from converters.ls2coco import ExportFormatError, category_ids, label_studio_export_to_coco
from converters.polygons import polygons_to_mask
from tests.converters.conftest import FixtureImages

BRUSH_CONFIG = (
    '<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image"><Label value="Road"/>'
    '</BrushLabels><RectangleLabels name="box" toName="image"><Label value="Sign"/></RectangleLabels>'
    '<PolygonLabels name="poly" toName="image"><Label value="Car"/></PolygonLabels></View>'
)
HUGE = 10**400  # a JSON integer no float holds: Python keeps it exact, math.isfinite raises OverflowError


def _brush(rle: list, width: int = 64, height: int = 64) -> dict:
    return {"id": "b1", "from_name": "brush", "to_name": "image", "type": "brushlabels", "original_width": width,
            "original_height": height, "value": {"format": "rle", "rle": rle, "brushlabels": ["Road"]}}


def _box(value: dict, width: int = 1000, height: int = 10) -> dict:
    return {"id": "s1", "from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": width,
            "original_height": height, "value": {"x": 1, "y": 1, "width": 5, "height": 5, **value,
                                                 "rectanglelabels": ["Sign"]}}


def _poly(points: list) -> dict:
    return {"id": "p1", "from_name": "poly", "to_name": "image", "type": "polygonlabels", "original_width": 64,
            "original_height": 64, "value": {"points": points, "polygonlabels": ["Car"]}}


def _square_rle() -> list[int]:
    mask = np.zeros((64, 64), np.uint8)
    mask[8:24, 8:40] = 255
    return mask2rle(mask)


# -- issue 19 item 4: brush RLE longer than its declared values --------------------------------------------------


def test_brush_rle_padded_past_any_encoding_is_refused_by_the_shared_region_reader() -> None:
    """The webhook path (segmentor.labelling), smart tools and ls2coco all read regions with region_to_mask and
    validate them with check_region: padding is refused there before the list is looked at item by item."""
    padded = _square_rle() + [0] * (max_rle_bytes(64 * 64 * 4) + 1)
    for call in (region_to_mask, lambda region: validate_regions([region], BRUSH_CONFIG)):
        with pytest.raises(InvalidRegionError, match=r"^region 'b1': brush rle is \d+ bytes, longer than any"):
            call(_brush(padded))
    junk_tail = _square_rle() + ["x"] * 200_000  # length first: the message is about the length, not the items
    with pytest.raises(InvalidRegionError, match="longer than any encoding"):
        validate_regions([_brush(junk_tail)], BRUSH_CONFIG)


def test_brush_rle_at_exactly_the_longest_encoding_is_read() -> None:
    rle = _square_rle()
    padded = rle + [0] * (max_rle_bytes(64 * 64 * 4) - len(rle))
    assert np.array_equal(region_to_mask(_brush(padded)), region_to_mask(_brush(rle)))


# -- item 11: word size over 8 bits ----------------------------------------------------------------------------


def test_brush_rle_word_size_over_8_bits_is_a_region_error() -> None:
    rle = _square_rle()
    rle[4] = (rle[4] & 0b111) | (15 << 3)  # word size 16
    for call in (region_to_mask, lambda region: validate_regions([region], BRUSH_CONFIG)):
        with pytest.raises(InvalidRegionError, match=r"^region 'b1': .*word size is 16 bits"):
            call(_brush(rle))


# -- items 10 and 12: integers no float holds, percentages that overflow in pixels -----------------------------


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (_box({"x": HUGE}), "rectangle x must be a finite number"),
        (_box({"rotation": HUGE}), "rectangle rotation must be a finite number"),
        (_poly([[HUGE, 1], [2, 2], [3, 1]]), r"point 0 is not an \[x, y\] pair of numbers"),
        (_box({"x": 1e307, "width": 1e307}), "rectangle x/y/width/height are too large"),  # x 1e308 px, +width: inf
        (_box({"y": 1e307, "height": 1e308}, width=10, height=1000), "rectangle x/y/width/height are too large"),
        (_box({"width": 1e308, "height": 1e308, "rotation": 45}, width=1000, height=1000), "rectangle x/y/wid"),
    ],
)
def test_numbers_that_overflow_are_region_errors(region: dict, message: str) -> None:
    with pytest.raises(InvalidRegionError, match=f"^region '[sp]1': {message}"):
        region_to_mask(region)


def test_finite_huge_rectangles_that_stay_finite_are_cut_to_the_image() -> None:
    mask = region_to_mask(_box({"x": 0, "y": 0, "width": 1e300, "height": 1e300}, width=20, height=10))
    assert mask.all()


def test_ls2coco_and_coco2ls_refuse_huge_scores_and_list_ids(
    export: list[dict], label_config: str, fixture_images: FixtureImages
) -> None:
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    cases = [
        (lambda e: e[1]["predictions"][0]["result"][0].update(score=HUGE), "score must be a number"),
        (lambda e: e[0].update(id=[1]), r"^task #0: 'id' must be an integer or a string, got \[1\]"),
        (lambda e: e[1]["annotations"][0].update(id={"id": 3}), "annotation ids must be integers or strings"),
        (lambda e: e[0]["annotations"][0]["result"][2]["value"].update(width=HUGE), "rectangle width must be a"),
    ]
    for breaks, message in cases:
        broken = copy.deepcopy(export)
        breaks(broken)
        with pytest.raises(ExportFormatError, match=message):
            label_studio_export_to_coco(broken, label_config, folders=folders, predictions=True)
    dataset = label_studio_export_to_coco(export, label_config, folders=folders).dataset
    for change, message in [
        (lambda d: d["annotations"][0].update(score=HUGE), "score must be a number"),
        (lambda d: d["annotations"][0].update(image_id=[1]), r"image_id \[1\] is not an image"),
        (lambda d: d["annotations"][0].update(id=[1]), "'id' must be an integer or a string"),
        (lambda d: d["annotations"][0].update(segmentation=[[HUGE, 0, 4, 0, 4, 4]]), "a polygon ring must be"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [60, 80], "counts": [HUGE]}), "cannot be"),
    ]:
        broken = copy.deepcopy(dataset)
        change(broken)
        with pytest.raises(CocoFormatError, match=message):
            coco_to_label_studio_tasks(broken, label_config)


# -- item 13 and evaluate: every field COCOeval reads is checked ----------------------------------------------


def _coco_pair() -> tuple[dict, list[dict]]:
    builder = CocoBuilder(["thing"])
    image = builder.add_image("a.png", 30, 20)
    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:12] = True
    builder.add_mask(image, "thing", mask, score=0.9)
    return builder.to_dict(), builder.results()


@pytest.mark.parametrize(
    ("change_dataset", "change_results", "message"),
    [
        (lambda d: d["annotations"][0].update(segmentation="abc"), None,
         "dataset annotation #0: segmentation must be polygons or COCO RLE"),
        (None, lambda r: r[0].update(segmentation="abc"), "detection #0: segmentation must be COCO RLE"),
        (None, lambda r: r[0]["segmentation"].update(counts="!!zz"), "detection #0: segmentation cannot be decoded"),
        (None, lambda r: r[0]["segmentation"].update(size=[30, 20]), "detection #0: segmentation must be .* size"),
        (None, lambda r: r[0].update(image_id=[1]), r"detection #0: image_id \[1\] is not an image"),
        (None, lambda r: r[0].update(category_id={"id": 1}), "detection #0: category_id .* is not a category"),
        (None, lambda r: r[0].update(score=HUGE), "detection #0: score must be a number"),
        (None, lambda r: r[0].update(bbox=[HUGE, 0, 1, 1]), r"detection #0: bbox must be \[x, y, width, height\]"),
        (lambda d: d["images"][0].update(id=[1]), None, "dataset image #0: needs an integer 'id'"),
        (lambda d: d["images"][0].update(width=True), None, "dataset image 1: width and height must be positive"),
        (lambda d: d["categories"][0].update(id="1"), None, "dataset category #0: needs an integer 'id'"),
        (lambda d: d["annotations"][0].update(id=[1]), None, "dataset annotation #0: needs an integer 'id'"),
        (lambda d: d["annotations"][0].update(area=HUGE), None, "dataset annotation #0: needs a numeric 'area'"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), None,
         "dataset annotation #0: a polygon must be a list of >= 3"),
    ],
)
def test_evaluate_refuses_what_cocoeval_cannot_read(change_dataset, change_results, message: str) -> None:
    dataset, results = _coco_pair()
    (change_dataset or (lambda _: None))(dataset)
    (change_results or (lambda _: None))(results)
    with pytest.raises(EvaluationInputError, match=f"^{message}"):
        evaluate(dataset, results)


def test_evaluate_leaves_the_callers_dataset_as_it_was() -> None:
    """COCOeval rewrites the ground truth's polygons into RLE in place (counts as bytes: no longer JSON)."""
    dataset, results = _coco_pair()
    before = copy.deepcopy(dataset)
    assert [round(e.ap, 6) for e in evaluate(dataset, results)] == [1.0, 1.0]
    assert dataset == before
    assert [round(e.ap, 6) for e in evaluate(dataset, results)] == [1.0, 1.0]  # and it can be evaluated again


def _run(*argv: str) -> tuple[int, str]:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, errors.getvalue()


def test_cli_refuses_hostile_files_in_one_line_with_exit_2(export_path: Path, tmp_path: Path) -> None:
    config = str(export_path.with_name("label_config.xml"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    dataset, results = _coco_pair()
    string_segmentation = tmp_path / "gt.json"
    string_segmentation.write_text(json.dumps(dataset | {"annotations": [
        dataset["annotations"][0] | {"segmentation": "abc"}]}))
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(results))
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([{"id": [1], "data": {"image": "a.png"}, "annotations": []}]))
    out = str(tmp_path / "out")
    cases = [
        (["ls2coco", str(deep), "--config", config, "--out", out], f"error: {deep} is nested too deeply"),
        (["ls2yolo", str(deep), "--config", config, "--out", out], f"error: {deep} is nested too deeply"),
        (["coco2ls", str(deep), "--config", config, "--out", out], f"error: {deep} is nested too deeply"),
        (["evaluate", str(deep), str(detections)], f"error: {deep} is nested too deeply"),
        (["evaluate", str(string_segmentation), str(detections)], "error: dataset annotation #0: segmentation"),
        (["ls2coco", str(listed), "--config", config, "--out", out], "error: task #0: 'id' must be an integer"),
    ]
    for argv, message in cases:
        code, stderr = _run(*argv)
        assert code == 2, (argv, stderr)
        assert stderr.startswith(message) and len(stderr.strip().splitlines()) == 1, stderr
    assert not Path(out).exists()


# -- item 18: control characters in file names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "name"),
    [
        ("/data/local-files/?d=day/b%00c.png", "day/bc.png"),
        ("/data/upload/3/a%00%0a.png", "upload/3/a.png"),
        ("/data/local-files/?d=..%00/..%00/etc/x.png", "etc/x.png"),  # a NUL does not save a '..' either
        ("https://host/a/%7f%1bb.png", "host/a/b.png"),
    ],
)
def test_file_names_hold_no_control_characters(reference: str, name: str) -> None:
    assert relative_name(reference) == name


def test_ls2coco_file_names_drop_nul_bytes(export: list[dict], label_config: str, fixture_images) -> None:
    export[0]["data"]["image"] = "/data/local-files/?d=coco-fixture/day/str%00eet.png"
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    dataset = label_studio_export_to_coco(export, label_config, folders=folders).dataset
    assert dataset["images"][0]["file_name"] == "coco-fixture/day/street.png"
    assert not any("\x00" in image["file_name"] for image in dataset["images"])


# -- issue 18: scoring rules and limits ----------------------------------------------------------------------------


def test_multi_piece_predictions_are_scored_on_every_piece(
    export: list[dict], label_config: str, fixture_images: FixtureImages, export_builder
) -> None:
    """A brush prediction in two pieces, matched against a ground truth of the same two pieces: AP 1 only when
    both pieces reach the detections list (polygons per piece are merged back into one RLE)."""
    two = np.zeros((60, 80), bool)
    two[5:20, 5:30] = True
    two[35:55, 45:75] = True
    export[0]["annotations"][0]["result"] = [export_builder.brush("gtTwo1", two, "Road")]
    export[0]["predictions"] = [{"id": 9, "model_version": "m", "score": 0.5,
                                 "result": [export_builder.brush("prTwo1", two, "Road", score=0.8)]}]
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    converted = label_studio_export_to_coco(export, label_config, folders=folders, predictions=True,
                                            encoding="polygon")
    (detection,) = [r for r in converted.results if r["image_id"] == 1]
    assert len(converted.dataset["annotations"][0]["segmentation"]) == 2  # two rings
    from pycocotools import mask as coco_mask

    decoded = coco_mask.decode({"size": detection["segmentation"]["size"],
                                "counts": detection["segmentation"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), two)
    assert detection["score"] == 0.8
    task_one = {**converted.dataset, "images": converted.dataset["images"][:1],
                "annotations": [a for a in converted.dataset["annotations"] if a["image_id"] == 1]}
    assert round(evaluate(task_one, [detection])[0].ap, 6) == 1.0


@pytest.mark.parametrize("order", [(5, 9), (9, 5)])
def test_latest_annotation_ties_on_updated_at_are_broken_by_the_higher_id(
    export: list[dict], label_config: str, fixture_images: FixtureImages, export_builder, order
) -> None:
    stamp = "2024-05-01T10:00:00.000000Z"
    annotations = []
    for annotation_id in order:
        annotations.append({"id": annotation_id, "result": [export_builder.polygon(
            f"p{annotation_id}", [[10.0, 10.0], [50.0, 10.0], [30.0, 50.0]], "Car")], "updated_at": stamp,
            "created_at": stamp, "ground_truth": False, "was_cancelled": False})
    export[0]["annotations"] = annotations
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    dataset = label_studio_export_to_coco(export, label_config, folders=folders, annotations="latest").dataset
    kept = {a["ls_annotation_id"] for a in dataset["annotations"] if a["image_id"] == 1}
    assert kept == {9}


def test_ids_above_2_to_the_53_break_ties_exactly(export: list[dict], label_config: str, fixture_images) -> None:
    """As floats, 2**53 and 2**53 + 1 are one number: the first listed would win the tie."""
    big = 2**53
    for annotation, annotation_id in zip(export[2]["annotations"], (big, big + 1), strict=True):
        annotation.update(id=annotation_id, updated_at="2024-05-01T10:00:00Z")
    folders = ImageFolders(fixture_images.document_root, fixture_images.media_root)
    dataset = label_studio_export_to_coco(export, label_config, folders=folders, annotations="latest").dataset
    assert {a["ls_annotation_id"] for a in dataset["annotations"] if a["image_id"] == 3} == {big + 1}


def test_explicit_and_free_category_ids_never_collide() -> None:
    controls = parse_label_config(
        '<View><Image name="i" value="$image"/><PolygonLabels name="p" toName="i"><Label value="a"/>'
        '<Label value="b" category="1"/><Label value="c"/><Label value="d" category="3"/><Label value="e"/>'
        '</PolygonLabels></View>'
    )
    ids = category_ids(controls)
    assert ids == {"a": 2, "b": 1, "c": 4, "d": 3, "e": 5}
    assert len(set(ids.values())) == len(ids)


def test_rotated_rectangles_on_non_square_images_round_trip_through_percent() -> None:
    """Width is a percent of the image width and height of its height even when the box is turned."""
    width, height = 200, 50
    angle = np.radians(30)
    along, across = np.array([np.cos(angle), np.sin(angle)]) * 40, np.array([-np.sin(angle), np.cos(angle)]) * 10
    origin = np.array([60.0, 10.0])
    corners = np.array([origin, origin + along, origin + along + across, origin + across])
    region = rectangle_region(corners, width=width, height=height, label="Sign", from_name="box", to_name="image",
                              region_id="r1")
    assert region["value"]["width"] == pytest.approx(20.0) and region["value"]["height"] == pytest.approx(20.0)
    assert region["value"]["rotation"] == pytest.approx(30.0)
    assert np.allclose(rectangle_pixels(region), corners, atol=1e-4)
    assert region_to_mask(region).shape == (50, 200)


def test_percent_rounding_never_moves_a_pixel_centre() -> None:
    """A vertex whose percent needs more than 4 decimals (39.9 / 128 px): rounded to 4, a pixel centre on the
    edge flipped (a hypothesis counterexample of test_polygon_region_to_mask_matches_the_source)."""
    ring = np.array([[35.36128997299448, 41.86128997299448], [30.9000090920307, 47.79138208133961],
                     [36.64456888541017, 50.95760356042576], [39.9, 46.4]])
    (region,) = polygon_regions([ring], width=128, height=96, label="Car", from_name="poly", to_name="image")
    assert np.array_equal(region_to_mask(region), polygons_to_mask([ring], 96, 128))


def test_values_exactly_at_the_limits() -> None:
    validate_regions([_poly([[0, 0], [100, 0], [100, 100]])], BRUSH_CONFIG)  # the image's own corners
    for point in ([-1e-9, 0], [100 + 1e-9, 0]):
        with pytest.raises(InvalidRegionError, match="is outside"):
            validate_regions([_poly([point, [50, 50], [60, 0]])], BRUSH_CONFIG)
    side = 1 << 14  # MAX_PIXELS is 16384 x 16384
    at_limit = _box({}, width=side, height=side)
    validate_regions([at_limit], BRUSH_CONFIG)
    with pytest.raises(InvalidRegionError, match="over the 268435456 pixel limit"):
        validate_regions([_box({}, width=side, height=side + 1)], BRUSH_CONFIG)
    assert side * side == MAX_PIXELS
    validate_regions([_box({"width": 1e-9})], BRUSH_CONFIG)
    with pytest.raises(InvalidRegionError, match="rectangle width must be > 0, got 0"):
        validate_regions([_box({"width": 0})], BRUSH_CONFIG)
