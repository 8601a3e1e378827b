"""Label Studio regions: shapes of the JSON, exact brush round trips, and the validator's verdicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from converters.labelstudio import (
    ControlTag,
    InvalidRegionError,
    LabelConfigError,
    brush_region,
    parse_label_config,
    polygon_regions,
    rectangle_pixels,
    rectangle_region,
    region_to_mask,
    regions_from_label_map,
    validate_regions,
)
from converters.polygons import mask_to_polygons
from tests.converters.shapes import blobs, iou, label_maps, ordinary_shapes

NAMES = {"from_name": "poly", "to_name": "image"}
BRUSH_NAMES = {"from_name": "brush", "to_name": "image"}


def _square_mask(height: int = 60, width: int = 80) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[10:30, 20:50] = True
    return mask


def test_polygon_regions_are_percent_with_every_field_label_studio_needs() -> None:
    polygons = mask_to_polygons(_square_mask())
    (region,) = polygon_regions(polygons, width=80, height=60, label="Car", score=0.5, **NAMES)
    assert region == {
        "id": "r1",
        "from_name": "poly",
        "to_name": "image",
        "type": "polygonlabels",
        "original_width": 80,
        "original_height": 60,
        "image_rotation": 0,
        "value": {"points": region["value"]["points"], "closed": True, "polygonlabels": ["Car"]},
        "score": 0.5,
    }
    expected = [(25.0, 100 * 10 / 60), (62.5, 100 * 10 / 60), (62.5, 50.0), (25.0, 50.0)]
    assert np.allclose(sorted(map(tuple, region["value"]["points"])), sorted(expected), atol=1e-4)


def test_polygon_points_are_clamped_and_ids_unique() -> None:
    polygons = [
        np.array([[-3.0, 0.0], [90.0, 0.0], [90.0, 70.0]]),
        np.array([[1.0, 1.0], [5.0, 1.0], [5.0, 5.0]]),
    ]
    regions = polygon_regions(polygons, width=80, height=60, label="Car", id_prefix="seg", **NAMES)
    assert [r["id"] for r in regions] == ["seg1", "seg2"]
    assert "score" not in regions[0]
    points = np.array(regions[0]["value"]["points"])
    assert points.min() == 0.0 and points.max() == 100.0


@settings(max_examples=60, deadline=None)
@given(st.one_of(ordinary_shapes(), blobs()))
def test_brush_rle_round_trips_exactly(mask: np.ndarray) -> None:
    region = brush_region(mask, label="Road", region_id="b1", **BRUSH_NAMES)
    assert all(type(byte) is int for byte in region["value"]["rle"])
    assert np.array_equal(region_to_mask(region), mask)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_brush_rle_round_trips_tiny_arbitrary_masks(mask: np.ndarray) -> None:
    region = brush_region(mask, label="Road", region_id="b1", **BRUSH_NAMES)
    assert np.array_equal(region_to_mask(region), mask)


@settings(max_examples=40, deadline=None)
@given(ordinary_shapes())
def test_polygon_region_to_mask_matches_the_source(mask: np.ndarray) -> None:
    height, width = mask.shape
    regions = polygon_regions(mask_to_polygons(mask), width=width, height=height, label="Car", **NAMES)
    assert iou(np.logical_or.reduce([region_to_mask(r) for r in regions]), mask) >= 0.98


@settings(max_examples=30, deadline=None)
@given(label_maps(), st.sampled_from(["polygon", "brush"]))
def test_regions_from_label_map_cover_every_segment_with_unique_ids(label_map: np.ndarray, kind: str) -> None:
    scores = {int(v): 0.5 + v / 100 for v in np.unique(label_map)}
    names = NAMES if kind == "polygon" else BRUSH_NAMES
    regions = regions_from_label_map(
        label_map, kind=kind, label="Car" if kind == "polygon" else "Road", scores=scores, min_area=0, **names
    )
    ids = [r["id"] for r in regions]
    assert len(ids) == len(set(ids))
    for value in np.unique(label_map):
        own = [
            r
            for r in regions
            if r["id"].startswith(f"s{value}") and r["id"][len(f"s{value}") :][:1] in ("", "-")
        ]
        assert own and all(r["score"] == scores[int(value)] for r in own)
        union = np.logical_or.reduce([region_to_mask(r) for r in own])
        assert iou(union, label_map == value) >= (1.0 if kind == "brush" else 0.98)


def _rectangle(x: float, y: float, width: float, height: float, rotation: float | None, size=(100, 50)) -> dict:
    value = {"x": x, "y": y, "width": width, "height": height, "rectanglelabels": ["Car"]}
    if rotation is not None:
        value["rotation"] = rotation
    return {
        "id": "box1",
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": size[0],
        "original_height": size[1],
        "value": value,
    }


def _inside_rotated_rectangle(region: dict, margin: float = 0.0) -> np.ndarray:
    """Independent oracle: pixel centres turned back into the rectangle's own frame and tested against it,
    the rectangle grown by ``margin`` pixels on every side (shrunk when negative)."""
    width, height = region["original_width"], region["original_height"]
    value = region["value"]
    origin = np.array([value["x"] * width / 100, value["y"] * height / 100])
    size = np.array([value["width"] * width / 100, value["height"] * height / 100])
    angle = np.radians(value.get("rotation", 0))
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    dx, dy = xs - origin[0], ys - origin[1]
    # Undo a clockwise (on screen, y down) turn about the top-left corner.
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    return (
        (along >= -margin) & (along <= size[0] + margin) & (across >= -margin) & (across <= size[1] + margin)
    )


def test_rectangle_mask_in_percent_of_each_side() -> None:
    expected = np.zeros((50, 100), bool)
    expected[10:30, 50:70] = True  # x 50 %, y 20 % of 50 px, 20 % of 100 px wide, 40 % of 50 px high
    assert np.array_equal(region_to_mask(_rectangle(50, 20, 20, 40, None)), expected)
    assert np.array_equal(region_to_mask(_rectangle(50, 20, 20, 40, 0)), expected)


def test_rectangle_rotation_turns_clockwise_about_the_top_left_corner() -> None:
    # 90° clockwise on screen about (50, 10): the width now runs down, the height runs left.
    expected = np.zeros((50, 100), bool)
    expected[10:30, 30:50] = True
    region = _rectangle(50, 20, 20, 40, 90)
    assert np.allclose(rectangle_pixels(region), [[50, 10], [50, 30], [30, 30], [30, 10]])
    assert np.array_equal(region_to_mask(region), expected)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(5, 70), st.floats(5, 70), st.floats(10, 40), st.floats(10, 40), st.floats(-180, 360)
)
def test_rotated_rectangle_mask_matches_an_independent_rasteriser(x, y, width, height, rotation) -> None:
    region = _rectangle(x, y, width, height, rotation, size=(120, 90))
    mask = region_to_mask(region)
    # pycocotools rasterises on a 5x grid: only centres within a fraction of a pixel of an edge may differ.
    assert not (_inside_rotated_rectangle(region, -0.25) & ~mask).any()
    assert not (mask & ~_inside_rotated_rectangle(region, 0.25)).any()
    back = rectangle_region(
        rectangle_pixels(region), width=120, height=90, label="Car", from_name="box", to_name="image",
        region_id="box1",
    )
    assert np.allclose(rectangle_pixels(back), rectangle_pixels(region), atol=1e-3)


def test_far_away_corners_are_cut_to_the_image_not_rasterised_in_full() -> None:
    # pycocotools' scanline buffer grows with the coordinates' span: 1e12 % used to exhaust memory.
    expected = np.zeros((50, 100), bool)
    expected[10:30, :] = True
    for far in (1e6, 1e12, 1e300):
        assert np.array_equal(region_to_mask(_rectangle(-far / 2, 20, far, 40, 0)), expected)


def test_regions_claiming_huge_images_are_refused() -> None:
    region = _rectangle(10, 10, 20, 20, 0, size=(100_000, 100_000))
    with pytest.raises(InvalidRegionError, match=r"^region 'box1': image size 100000x100000 is over the"):
        region_to_mask(region)


def test_rectangles_are_validated_against_the_config() -> None:
    config = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
        '<Label value="Car"/></RectangleLabels></View>'
    )
    validate_regions([_rectangle(10, 10, 20, 20, 30)], config)
    for change, message in [
        (_set("value.width", 0), "rectangle width must be > 0"),
        (_set("value.x", "5"), "rectangle x must be a finite number, got '5'"),
        (_set("value.rotation", float("inf")), "rectangle rotation must be a finite number"),
        (_set("value.rectanglelabels", ["Bus"]), r"labels \['Bus'\] are not in control 'box'"),
    ]:
        region = _rectangle(10, 10, 20, 20, 30)
        change(region)
        with pytest.raises(InvalidRegionError, match=f"^region 'box1': {message}"):
            validate_regions([region], config)


def test_regions_from_label_map_drops_small_segments_and_rejects_unknown_kinds() -> None:
    label_map = np.zeros((20, 20), np.int32)
    label_map[0, 0] = 1  # 1 px segment
    assert [
        r["id"] for r in regions_from_label_map(label_map, kind="brush", label="Road", **BRUSH_NAMES)
    ] == ["s0"]
    with pytest.raises(ValueError, match="kind"):
        regions_from_label_map(label_map, kind="mask", label="Road", **BRUSH_NAMES)


def test_parse_label_config_reads_controls_in_order_with_all_attributes(label_config: str) -> None:
    controls = parse_label_config(label_config)
    assert [(c.name, c.tag, c.to_name, c.labels) for c in controls] == [
        ("poly", "PolygonLabels", "image", ["Car", "Person"]),
        ("brush", "BrushLabels", "image", ["Road", "Sky"]),
        ("box", "RectangleLabels", "image", ["Sign", "Truck"]),
        ("point", "KeyPointLabels", "image", ["Eye"]),
        ("quality", "Choices", "image", ["good", "blurry"]),
    ]
    assert controls[0].label_attrs["Car"] == {"value": "Car", "category": "7", "background": "#ff0000"}
    assert controls[0].attrs == {
        "name": "poly",
        "toName": "image",
        "strokeWidth": "2",
        "pointSize": "small",
        "opacity": "0.6",
    }
    assert isinstance(controls[0], ControlTag) and controls[0].data_key == "image"


def test_parse_label_config_keeps_custom_knobs() -> None:
    config = (
        '<View><Image name="img" value="$photo"/><BrushLabels name="b" toName="img" emerdiff_k="12">'
        '<Label value="Thing"/></BrushLabels></View>'
    )
    (control,) = parse_label_config(config)
    assert control.attrs["emerdiff_k"] == "12" and control.data_key == "photo"


@pytest.mark.parametrize("config", ["", "<View><Image", "not xml", None])
def test_malformed_label_config_raises_label_config_error(config: str) -> None:
    with pytest.raises(LabelConfigError):
        parse_label_config(config)


@pytest.fixture
def good_regions() -> list[dict]:
    mask = _square_mask()
    polygon = polygon_regions(mask_to_polygons(mask), width=80, height=60, label="Person", score=0.8, **NAMES)
    brush = brush_region(mask, label="Sky", region_id="b1", score=0.7, **BRUSH_NAMES)
    return [*polygon, brush]


def test_validator_accepts_good_regions(good_regions: list[dict], label_config: str) -> None:
    validate_regions(good_regions, label_config)
    validate_regions([], label_config)


def _set(path: str, value: object):
    def change(region: dict) -> None:
        *parents, last = path.split(".")
        target = region
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()

BAD_POLYGON = [
    (_set("from_name", "polygons"), "from_name 'polygons' is not a control"),
    (_set("to_name", "img"), "to_name 'img' is not the toName of control 'poly'"),
    (_set("type", "brushlabels"), "type 'brushlabels' does not match control 'poly'"),
    (_set("type", "rectanglelabels"), "type 'rectanglelabels' does not match control 'poly'"),
    (_set("value.polygonlabels", ["Truck"]), r"labels \['Truck'\] are not in control 'poly'"),
    (_set("value.polygonlabels", []), "value.polygonlabels must be a non-empty list of label strings"),
    (_set("value.points", [[10, 10], [20, 10], [20, 100.5]]), r"point 2 \[20, 100.5\] is outside \[0, 100\]"),
    (_set("value.points", [[10, 10], [-0.1, 10], [20, 20]]), "point 1 .* is outside"),
    (_set("value.points", [[10, 10], [20, 10]]), ">= 3 points, got 2"),
    (_set("value.points", [[10, 10], [20, "10"], [20, 20]]), "point 1 is not an \\[x, y\\] pair of numbers"),
    (_set("value.points", [[10, 10], [20, float("nan")], [20, 20]]), "point 1 is not an"),
    (_set("original_width", _DELETE), "original_width must be a positive integer, got None"),
    (_set("original_height", 0), "original_height must be a positive integer, got 0"),
    (_set("value", "points"), "'value' must be a JSON object"),
]

BAD_BRUSH = [
    (_set("type", "polygonlabels"), "type 'polygonlabels' does not match control 'brush'"),
    (_set("value.brushlabels", ["Car"]), r"labels \['Car'\] are not in control 'brush'"),
    (_set("value.rle", "abc"), "rle must be a non-empty list of ints"),
    (_set("value.rle", [1.5, 2, 3]), "rle must be a non-empty list of ints"),
    (_set("value.rle", [0, 0, 1, 300]), r"ints in \[0, 255\]"),
    (_set("value.rle", [0, 0, 0, 16, 0]), "rle encodes 16 values, expected 19200"),
    (_set("value.format", "png"), "format must be 'rle'"),
    (_set("original_height", _DELETE), "original_height must be a positive integer"),
]


@pytest.mark.parametrize(("change", "message"), BAD_POLYGON)
def test_validator_names_the_polygon_region_and_reason(
    good_regions: list[dict], label_config: str, change, message: str
) -> None:
    regions = copy.deepcopy(good_regions)
    change(regions[0])
    with pytest.raises(InvalidRegionError, match=f"^region 'r1': .*{message}"):
        validate_regions(regions, label_config)


@pytest.mark.parametrize(("change", "message"), BAD_BRUSH)
def test_validator_names_the_brush_region_and_reason(
    good_regions: list[dict], label_config: str, change, message: str
) -> None:
    regions = copy.deepcopy(good_regions)
    change(regions[-1])
    with pytest.raises(InvalidRegionError, match=f"^region 'b1': .*{message}"):
        validate_regions(regions, label_config)


def test_validator_rejects_duplicate_and_missing_ids(good_regions: list[dict], label_config: str) -> None:
    duplicated = [good_regions[0], {**good_regions[-1], "id": "r1"}]
    with pytest.raises(InvalidRegionError, match=r"^region 'r1': duplicate id"):
        validate_regions(duplicated, label_config)
    with pytest.raises(InvalidRegionError, match=r"^region #0: 'id' must be a non-empty string, got None"):
        validate_regions([{k: v for k, v in good_regions[0].items() if k != "id"}], label_config)
    with pytest.raises(InvalidRegionError, match=r"^region #1 must be a JSON object"):
        validate_regions([good_regions[0], "r2"], label_config)


def test_validator_parses_the_config_with_the_same_parser(good_regions: list[dict]) -> None:
    with pytest.raises(LabelConfigError):
        validate_regions(good_regions, "<View><Image")


def test_region_to_mask_rejects_corrupt_brush_data(good_regions: list[dict]) -> None:
    brush = copy.deepcopy(good_regions[-1])
    brush["value"]["rle"] = brush["value"]["rle"][:-3]
    with pytest.raises(InvalidRegionError, match=r"^region 'b1': brush rle is corrupt"):
        region_to_mask(brush)
