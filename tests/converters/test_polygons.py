"""mask ↔ polygon round trips on generated shapes, the pixel-edge frame, and the options' contracts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.polygons import (
    DEFAULT_MIN_AREA,
    InvalidMaskError,
    label_map_to_polygons,
    mask_to_polygons,
    polygons_to_mask,
)
from tests.converters.shapes import HEIGHT, WIDTH, blobs, filled, iou, label_maps, ordinary_shapes

PROPERTY = settings(max_examples=80, deadline=None)


def _round_trip(mask: np.ndarray, **options) -> np.ndarray:
    return polygons_to_mask(mask_to_polygons(mask, **options), *mask.shape)


@PROPERTY
@given(ordinary_shapes())
def test_ordinary_shapes_round_trip_with_iou_98_and_area_within_1_percent(mask: np.ndarray) -> None:
    drawn = _round_trip(mask)
    assert iou(drawn, mask) >= 0.98
    # One pixel of slack: on a 99 px shape a single boundary pixel is already 1.01 % (found by hypothesis).
    assert abs(int(drawn.sum()) - int(mask.sum())) <= max(1, 0.01 * mask.sum())


@PROPERTY
@given(blobs())
def test_blobs_round_trip_to_their_filled_outline(mask: np.ndarray) -> None:
    drawn = _round_trip(mask, min_area=0)
    target = filled(mask)
    assert iou(drawn, target) >= 0.98
    assert abs(int(drawn.sum()) - int(target.sum())) <= 0.01 * target.sum()


@settings(max_examples=50, deadline=None)
@given(label_maps())
def test_label_map_polygons_cover_each_segment(label_map: np.ndarray) -> None:
    per_label = label_map_to_polygons(label_map, min_area=0)
    assert sorted(per_label) == sorted(int(v) for v in np.unique(label_map))
    for value, polygons in per_label.items():
        segment = label_map == value
        assert iou(polygons_to_mask(polygons, HEIGHT, WIDTH), filled(segment)) >= 0.98
        assert all(p.dtype == np.float64 and p.ndim == 2 and p.shape[1] == 2 for p in polygons)
        assert all(p.min() >= 0 and (p <= [WIDTH, HEIGHT]).all() for p in polygons)


@settings(max_examples=50, deadline=None)
@given(ordinary_shapes())
def test_tolerance_zero_reproduces_the_mask_exactly(mask: np.ndarray) -> None:
    assert np.array_equal(_round_trip(mask, tolerance=0.0), mask)


def test_a_rectangle_becomes_its_pixel_edges() -> None:
    mask = np.zeros((20, 30), bool)
    mask[3:9, 2:12] = True  # rows 3..8, columns 2..11
    (polygon,) = mask_to_polygons(mask)
    assert polygon.dtype == np.float64
    assert sorted(map(tuple, polygon)) == sorted([(2.0, 3.0), (12.0, 3.0), (12.0, 9.0), (2.0, 9.0)])


def test_a_single_pixel_and_a_one_pixel_line_keep_their_area() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2, 3] = True
    mask[6, 4:15] = True
    drawn = _round_trip(mask, min_area=0)
    assert np.array_equal(drawn, mask)


def test_holes_are_filled_and_nested_islands_are_covered() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[12:28, 12:28] = False  # hole
    mask[18:22, 18:22] = True  # island inside the hole
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 1
    assert np.array_equal(polygons_to_mask(polygons, 40, 40), filled(mask))


def test_components_below_min_area_are_dropped() -> None:
    mask = np.zeros((30, 30), bool)
    mask[2:4, 2:5] = True  # 6 px
    mask[10:20, 10:20] = True  # 100 px
    assert DEFAULT_MIN_AREA > 6
    assert len(mask_to_polygons(mask)) == 1
    assert len(mask_to_polygons(mask, min_area=0)) == 2


def test_max_vertices_is_a_hard_budget() -> None:
    rng = np.random.default_rng(3)
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    radius = 40 + 6 * np.sin(angles * 12) + rng.uniform(0, 3, angles.size)
    ys, xs = np.mgrid[0:100, 0:100] + 0.5
    theta = np.arctan2(ys - 50, xs - 50) % (2 * np.pi)
    mask = np.hypot(xs - 50, ys - 50) < np.interp(theta, angles, radius, period=2 * np.pi)
    (unbounded,) = mask_to_polygons(mask, max_vertices=10_000)
    (bounded,) = mask_to_polygons(mask, max_vertices=40)
    assert len(unbounded) > 40
    assert len(bounded) <= 40
    assert iou(polygons_to_mask([bounded], 100, 100), mask) > 0.9


@pytest.mark.parametrize(
    ("mask", "options", "message"),
    [
        (np.zeros((4, 4, 3), bool), {}, "must be 2-D"),
        (np.zeros((0, 4), bool), {}, "empty"),
        (np.ones((4, 4), bool), {"tolerance": -1.0}, "tolerance"),
        (np.ones((4, 4), bool), {"max_vertices": 3}, "max_vertices"),
        (np.ones((4, 4), bool), {"min_iou": 1.5}, "min_iou"),
    ],
)
def test_bad_masks_and_options_are_named(mask: np.ndarray, options: dict, message: str) -> None:
    with pytest.raises(InvalidMaskError, match=message):
        mask_to_polygons(mask, **options)


def test_bad_polygons_are_named() -> None:
    with pytest.raises(InvalidMaskError, match="polygon 1 must be an"):
        polygons_to_mask([np.zeros((3, 2)), np.zeros((2, 2))], 5, 5)
    with pytest.raises(InvalidMaskError, match="non-finite"):
        polygons_to_mask([np.array([[0, 0], [1, np.nan], [1, 1]])], 5, 5)
    with pytest.raises(InvalidMaskError, match="integer"):
        label_map_to_polygons(np.zeros((4, 4), np.float32))


@given(st.integers(1, 12), st.integers(1, 12))
@settings(max_examples=30, deadline=None)
def test_empty_input_gives_empty_output(height: int, width: int) -> None:
    assert mask_to_polygons(np.zeros((height, width), bool)) == []
    assert not polygons_to_mask([], height, width).any()
