"""Every prompt kind of the smart tools, answered from a hand-made segmentation whose regions are known.

The expected regions are exact: each answer's mask (decoded as Label Studio would) must equal the union of
the label map's segments the prompts select.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters import region_to_mask, validate_regions
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings
from ml_backend.smart_tools.prompts import ContextError, parse_context, smart_regions, target_for
from tests.interactive.support import QUADRANTS, SCORES, at, keypoint, label_config, quadrants, rectangle

SETTINGS = Settings(num_segments=4, min_area=1)


def answer(result: list, kind: str = "brush", attributes: str = "", label_map: np.ndarray = QUADRANTS):
    config = label_config(kind, attributes)
    prompts = parse_context({"result": result})
    project = ProjectConfig.parse(config, SETTINGS)
    regions, score = smart_regions(prompts, target_for(project, prompts), quadrants(label_map))
    validate_regions(regions, config)
    return regions, score


def selected_mask(regions: list[dict]) -> np.ndarray:
    mask = np.zeros(QUADRANTS.shape, bool)
    for region in regions:
        mask |= region_to_mask(region)
    return mask


def segments(*ids: int) -> np.ndarray:
    return np.isin(QUADRANTS, ids)


@pytest.mark.parametrize("kind", ["brush", "polygon"])
def test_a_positive_point_selects_the_segment_under_it_with_the_prompts_label(kind: str) -> None:
    regions, score = answer([at(1, label="Dog")], kind)
    assert np.array_equal(selected_mask(regions), segments(1))
    assert score == pytest.approx(SCORES[1])
    region_type = f"{kind}labels"
    assert {region["type"] for region in regions} == {region_type}
    assert all(region["value"][region_type] == ["Dog"] for region in regions)
    assert {region["from_name"] for region in regions} == {"paint" if kind == "brush" else "outline"}


def test_further_positive_points_add_segments() -> None:
    regions, score = answer([at(0), at(3)])
    (region,) = regions  # one region of the union (brush)
    assert np.array_equal(region_to_mask(region), segments(0, 3))
    assert score == pytest.approx((SCORES[0] + SCORES[3]) / 2)


def test_polygons_of_a_selection_in_pieces_are_one_region_per_piece() -> None:
    label_map = QUADRANTS.copy()
    label_map[18:22, :] = 1  # quadrants 0 and 2 apart, a band of 1 between them
    regions, _ = answer([at(0), at(2)], "polygon", label_map=label_map)
    assert len(regions) == 2 and np.array_equal(selected_mask(regions), np.isin(label_map, (0, 2)))


def test_a_repeated_point_climbs_the_merge_tree_one_level_each_time() -> None:
    assert np.array_equal(selected_mask(answer([at(0)])[0]), segments(0))
    assert np.array_equal(selected_mask(answer([at(0), at(0)])[0]), segments(0, 1))
    assert np.array_equal(selected_mask(answer([at(0), at(0), at(0)])[0]), segments(0, 1, 2, 3))
    # At the root there is nothing left to climb.
    assert np.array_equal(selected_mask(answer([at(0)] * 4)[0]), segments(0, 1, 2, 3))
    # A point on a segment not yet selected adds it; any point on the selection climbs it.
    assert np.array_equal(selected_mask(answer([at(0), at(1)])[0]), segments(0, 1))
    assert np.array_equal(selected_mask(answer([at(0), at(0), at(1)])[0]), segments(0, 1, 2, 3))


def test_negative_points_remove_the_segment_under_them() -> None:
    # Climb to the top half, then remove its right quadrant.
    regions, _ = answer([at(0), at(0), at(1, positive=False)])
    assert np.array_equal(selected_mask(regions), segments(0))
    # From the whole image: removing one quadrant keeps the three others.
    regions, _ = answer([at(3)] * 3 + [at(2, positive=False)])
    assert np.array_equal(selected_mask(regions), segments(0, 1, 3))
    # A negative point where nothing is selected changes nothing; removing everything leaves no region.
    assert np.array_equal(selected_mask(answer([at(0), at(3, positive=False)])[0]), segments(0))
    assert answer([at(0), at(0, positive=False)]) == ([], 0.0)


def test_upstreams_integer_flags_mark_points_too() -> None:
    negative = at(1, positive=False) | {"is_positive": 0}
    regions, _ = answer([at(0), at(0), negative])
    assert np.array_equal(selected_mask(regions), segments(0))


def test_a_rectangle_selects_the_segments_mostly_inside_it() -> None:
    # 60 % x 45 %: 90 % of quadrant 0, 18 % of quadrant 1, nothing of the bottom half.
    regions, _ = answer([rectangle(0, 0, 60, 45)])
    assert np.array_equal(selected_mask(regions), segments(0))
    regions, _ = answer([rectangle(0, 0, 100, 45)])
    assert np.array_equal(selected_mask(regions), segments(0, 1))
    # A rectangle holding no segment's majority selects nothing.
    assert answer([rectangle(40, 40, 20, 20)]) == ([], 0.0)


def test_points_outside_the_image_select_nothing() -> None:
    assert answer([keypoint(150.0, 20.0)]) == ([], 0.0)
    assert answer([keypoint(20.0, -0.5)]) == ([], 0.0)
    # The other points of the same request still count; 100 % is the last pixel's far edge.
    regions, _ = answer([keypoint(150.0, 20.0), keypoint(100.0, 100.0)])
    assert np.array_equal(selected_mask(regions), segments(3))


def test_a_point_on_a_pixel_no_segment_owns_selects_nothing() -> None:
    label_map = QUADRANTS.copy()
    label_map[:10, :10] = -1
    assert answer([keypoint(5.0, 5.0)], label_map=label_map) == ([], 0.0)
    regions, _ = answer([keypoint(5.0, 5.0), keypoint(40.0, 40.0)], label_map=label_map)
    assert np.array_equal(selected_mask(regions), label_map == 0)


def test_the_control_level_sets_what_one_click_selects() -> None:
    # emerdiff-segments="2": the project sees halves; one click takes a half, a second the whole image.
    attributes = ' emerdiff-segments="2"'
    assert np.array_equal(selected_mask(answer([at(3)], attributes=attributes)[0]), segments(2, 3))
    assert np.array_equal(selected_mask(answer([at(3)] * 2, attributes=attributes)[0]), segments(0, 1, 2, 3))
    regions, _ = answer([at(3)] * 2 + [at(1, positive=False)], attributes=attributes)
    assert np.array_equal(selected_mask(regions), segments(2, 3))


def test_the_same_selection_keeps_its_region_id() -> None:
    first, _ = answer([at(0), at(0)])
    second, _ = answer([at(1), at(1)])
    assert first[0]["id"] == second[0]["id"] and first[0]["id"].startswith("paint-smart-")


def test_an_unknown_label_is_refused_by_name() -> None:
    with pytest.raises(ContextError, match=r"label 'Bird'.*labels: \['Cat', 'Dog'\]"):
        answer([at(0, label="Bird")])


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ("points", "context must be a JSON object"),
        ({"result": {"x": 1}}, "context.result must be a list"),
        ({"result": [5]}, r"context.result\[0\] must be a JSON object"),
        ({"result": [at(0) | {"type": "polygonlabels"}]}, "not a smart prompt"),
        ({"result": [at(0) | {"value": "here"}]}, "'value' must be a JSON object"),
        ({"result": [at(0) | {"value": {"x": 5, "keypointlabels": ["Cat"]}}]}, "value.y must be a finite"),
        ({"result": [at(0) | {"value": {"x": "5", "y": 5, "keypointlabels": ["Cat"]}}]}, "value.x must be"),
        ({"result": [at(0) | {"value": {"x": 5, "y": float("nan"), "keypointlabels": ["Cat"]}}]}, "value.y"),
        ({"result": [at(0) | {"value": {"x": 5, "y": 5, "keypointlabels": []}}]}, "non-empty list of label"),
        ({"result": [at(0) | {"is_positive": "yes"}]}, "is_positive must be"),
        ({"result": [at(0) | {"to_name": 7}]}, "to_name must be a string"),
        ({"result": [at(0), at(1, label="Dog")]}, "mixes labels"),
        ({"result": [rectangle(0, 0, 50, 50) | {"value": {"x": 0, "y": 0, "rectanglelabels": ["Cat"]}}]},
         "value.width must be"),
    ],
)
def test_a_malformed_context_gets_a_specific_error(context: object, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        parse_context(context)


def test_a_zero_sized_rectangle_is_refused() -> None:
    with pytest.raises(ContextError, match="width must be > 0"):
        answer([rectangle(10, 10, 0, 20)])


@pytest.mark.parametrize("context", [None, {}, {"result": []}, {"result": None}])
def test_no_prompts_means_the_automatic_prediction(context: object) -> None:
    assert parse_context(context) is None
