"""Smart tools and the merge tree off the square (issue 18): non-square images, rotated boxes, straight borders.

Hand-made label maps whose every pixel is known, so each expectation is exact. The map used most is 20 rows
by 60 columns, six 10 x 20 segments: ``3 * (row >= 10) + column // 20``. A mapping that swaps rows and
columns, or scales x by the height, lands on another segment (or outside the map) there.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters import region_to_mask
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings
from ml_backend.segmentation.cache import CachedSegmentation
from ml_backend.smart_tools.prompts import parse_context, select, smart_regions, target_for
from segmentor.merge_tree import MergeTree, adjacency, merged_scores
from tests.interactive.support import keypoint, label_config, rectangle

ROWS, COLUMNS = 20, 60
WIDE = (3 * (np.arange(ROWS)[:, None] >= 10) + np.arange(COLUMNS)[None, :] // 20).astype(np.int32)


def chosen(*prompts: dict, label_map: np.ndarray = WIDE, tree: MergeTree | None = None, level: int | None = None):
    return select(parse_context({"result": list(prompts)}), label_map, tree, level)


def box(x: float, y: float, width: float, height: float, rotation: float) -> dict:
    region = rectangle(x, y, width, height)
    region["value"]["rotation"] = rotation
    return region


# --- a click lands on the segment under it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "segment"),
    [
        (10.0, 25.0, 0),
        (50.0, 25.0, 1),  # column 30, row 5
        (90.0, 25.0, 2),
        (10.0, 75.0, 3),
        (50.0, 75.0, 4),  # column 30, row 15
        (0.0, 0.0, 0),
        (100.0, 100.0, 5),  # 100 % is the far edge of the last pixel
        (99.0, 49.0, 2),  # column 59, row 9: the last column of the first row band
        (34.0, 50.0, 4),  # column 20 (the first of segment 1's band), row 10 (the first of the lower band)
    ],
)
def test_a_click_on_a_wide_image_selects_the_segment_under_it(x: float, y: float, segment: int) -> None:
    assert chosen(keypoint(x, y)) == {segment}


@pytest.mark.parametrize(("x", "y", "segment"), [(25.0, 10.0, 0), (75.0, 10.0, 1), (25.0, 95.0, 10), (99.9, 99.9, 11)])
def test_a_click_on_a_tall_image_selects_the_segment_under_it(x: float, y: float, segment: int) -> None:
    # 60 rows by 20 columns: six row bands of 10 and two column bands: segment 2 * band + column // 10.
    tall = (2 * (np.arange(COLUMNS)[:, None] // 10) + np.arange(ROWS)[None, :] // 10).astype(np.int32)
    assert tall.shape == (COLUMNS, ROWS)
    assert chosen(keypoint(x, y), label_map=tall) == {segment}


@pytest.mark.parametrize(("x", "y"), [(100.01, 50.0), (50.0, -0.01), (-1.0, 50.0), (50.0, 100.5)])
def test_a_click_outside_the_image_selects_nothing(x: float, y: float) -> None:
    assert chosen(keypoint(x, y)) == set()


# --- rotated rectangles -----------------------------------------------------------------------------------


def test_a_box_rotated_90_degrees_turns_clockwise_about_its_top_left_corner() -> None:
    # Corner at the top-right of the image; 20 px along the rotated width (down), 20 px across (left):
    # the right-hand column band, segments 2 and 5. Unrotated, the same box lies outside the image.
    assert chosen(box(100.0, 0.0, 100 * 20 / COLUMNS, 100.0, 90.0)) == {2, 5}
    assert chosen(box(100.0, 0.0, 100 * 20 / COLUMNS, 100.0, 0.0)) == set()


def test_a_box_rotated_270_degrees_turns_the_other_way() -> None:
    # Corner at the bottom-left; the width runs up 20 px, the height right 20 px: segments 0 and 3.
    assert chosen(box(0.0, 100.0, 100 * 20 / COLUMNS, 100.0, 270.0)) == {0, 3}


def test_a_box_rotated_180_degrees_covers_up_and_left_of_its_corner() -> None:
    # Corner at (40, 10); width 40 px to the left, height 10 px up: segments 0 and 1 of the top band.
    assert chosen(box(100 * 40 / COLUMNS, 50.0, 100 * 40 / COLUMNS, 50.0, 180.0)) == {0, 1}


# --- "more than half inside" at exactly half -------------------------------------------------------------


def _half_inside_map(extra_inside: int) -> tuple[np.ndarray, dict]:
    """Segment 1 = the rectangle's own pixels (less ``-extra_inside``) plus as many pixels outside it."""
    prompt = box(20.0, 20.0, 20.0, 30.0, 0.0)
    region = dict(prompt, original_width=COLUMNS, original_height=ROWS)
    inside = region_to_mask(region)
    label_map = np.zeros((ROWS, COLUMNS), np.int32)
    label_map[inside] = 1
    outside = np.flatnonzero(~inside.ravel())[: int(inside.sum()) - extra_inside]
    label_map.ravel()[outside] = 1
    return label_map, prompt


def test_a_segment_exactly_half_inside_a_box_is_not_taken_and_one_pixel_more_is() -> None:
    exactly_half, prompt = _half_inside_map(0)
    assert chosen(prompt, label_map=exactly_half) == set()
    more_than_half, prompt = _half_inside_map(1)
    assert chosen(prompt, label_map=more_than_half) == {1}


def test_a_box_measures_the_controls_level_segment_not_its_leaves() -> None:
    # Leaves 0 | 1 | 2 left to right (20 columns each); the tree merges 1 and 2 first. At level 2 (two
    # segments) the box over leaf 1 holds only half of the merged {1, 2}: nothing is taken. At the leaves'
    # own level (3) leaf 1 alone is inside.
    leaves = (np.arange(COLUMNS)[None, :] // 20).repeat(ROWS, axis=0).astype(np.int32)
    tree = MergeTree(np.array([[1, 2], [0, 3]], np.int32), 3)
    over_leaf_1 = box(100 * 20 / COLUMNS, 0.0, 100 * 20 / COLUMNS, 100.0, 0.0)
    assert chosen(over_leaf_1, label_map=leaves, tree=tree, level=3) == {1}
    assert chosen(over_leaf_1, label_map=leaves, tree=tree, level=2) == set()
    wider = box(100 * 20 / COLUMNS, 0.0, 100 * 40 / COLUMNS, 100.0, 0.0)
    assert chosen(wider, label_map=leaves, tree=tree, level=2) == {1, 2}


# --- scores weighed by area ------------------------------------------------------------------------------


def test_a_smart_regions_score_is_its_segments_scores_weighted_by_their_areas() -> None:
    label_map = WIDE.copy()
    label_map[:10, 20:25] = 0  # segment 0: 10 x 25 = 250 pixels; segment 1: 10 x 15 = 150
    scores = {0: 0.9, 1: 0.1, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5}
    segmentation = CachedSegmentation(label_map=label_map, scores=scores)
    config = label_config("brush")
    prompts = parse_context({"result": [keypoint(5.0, 25.0), keypoint(50.0, 25.0)]})
    target = target_for(ProjectConfig.parse(config, Settings(num_segments=6, min_area=1)), prompts)
    regions, score = smart_regions(prompts, target, segmentation)
    assert score == pytest.approx((0.9 * 250 + 0.1 * 150) / 400)
    assert [region["score"] for region in regions] == [pytest.approx(score)]


def test_merged_scores_weigh_each_part_by_its_area() -> None:
    label_map = WIDE.copy()
    label_map[:10, 20:] = 0  # segment 0 covers 10 x 60 = 600 pixels, segment 1 none; 2 is gone too
    label_map[10:, 40:] = 3  # segment 3: 10 x 40 = 400; segment 5 is gone; segment 4: 10 x 20 = 200
    present = np.unique(label_map)
    assert list(present) == [0, 3, 4]
    compact = np.searchsorted(present, label_map).astype(np.int32)  # 0, 1, 2
    clusters = np.array([0, 1, 1], np.int64)  # {0} and {3, 4}
    merged = merged_scores(compact, {0: 0.2, 1: 0.9, 2: 0.4}, clusters)
    assert merged == {0: pytest.approx(0.2), 1: pytest.approx((0.9 * 400 + 0.4 * 200) / 600)}


# --- adjacency across straight borders only, and never across a corner ----------------------------------


def test_segments_that_touch_only_along_a_horizontal_border_are_adjacent() -> None:
    halves = np.repeat(np.array([[0], [1]], np.int32), [7, 5], axis=0).repeat(30, axis=1)  # top 7 rows / bottom 5
    assert adjacency(halves, 2).toarray().tolist() == [[False, True], [True, False]]


def test_segments_that_touch_only_along_a_vertical_border_are_adjacent() -> None:
    halves = np.repeat(np.array([[0, 1]], np.int32), [9, 4], axis=1).repeat(12, axis=0)  # left 9 / right 4 columns
    assert adjacency(halves, 2).toarray().tolist() == [[False, True], [True, False]]


def test_the_wide_maps_segments_touch_their_row_and_column_neighbours_only() -> None:
    matrix = adjacency(WIDE, 6).toarray()
    expected = {(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)}
    assert {(int(a), int(b)) for a, b in zip(*np.nonzero(matrix), strict=True) if a < b} == expected
    assert (matrix == matrix.T).all()


def test_segments_meeting_only_at_a_corner_are_not_adjacent() -> None:
    # 0 1 / 2 0' pattern: 0 and 3 meet only diagonally, as do 1 and 2.
    checker = np.block([[np.full((5, 8), 0), np.full((5, 8), 1)], [np.full((5, 8), 2), np.full((5, 8), 3)]])
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(adjacency(checker.astype(np.int32), 4)), strict=True)}
    assert pairs == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1), (2, 3), (3, 2)}


def test_the_merge_tree_of_stripes_joins_only_neighbouring_stripes() -> None:
    # Four horizontal stripes; the embeddings make stripes 0 and 3 identical, but they do not touch: the
    # tree must join each only through the stripes between them.
    stripes = np.repeat(np.arange(4, dtype=np.int32), 3)[:, None].repeat(25, axis=1)
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 1.0], [1.0, 0.0]])
    tree = MergeTree.build(stripes, embeddings, linkage="single")
    for merge in tree.merges:
        groups = [tree.leaves(int(node)) for node in merge]
        joined = sorted(groups[0] + groups[1])
        assert joined == list(range(joined[0], joined[-1] + 1)), f"merge {merge} joins stripes that do not touch"


@pytest.mark.parametrize("axis", [0, 1])
def test_a_one_pixel_line_between_two_segments_keeps_them_apart(axis: int) -> None:
    # 0 (5 lines) | 1 (one line) | 2 (5 lines), as rows (axis 0) or columns (axis 1): 0 and 2 never touch.
    lines = np.repeat(np.arange(3, dtype=np.int32), [5, 1, 5])
    label_map = np.repeat(lines[:, None], 8, axis=1) if axis == 0 else np.repeat(lines[None, :], 8, axis=0)
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(adjacency(label_map, 3)), strict=True) if a < b}
    assert pairs == {(0, 1), (1, 2)}
