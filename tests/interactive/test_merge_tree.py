"""The merge tree over segments: adjacency-constrained agglomeration and its cuts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segmentor.merge_tree import LINKAGES, MergeTree, MergeTreeError, adjacency, merged_scores

# Four vertical stripes 0 | 1 | 2 | 3, each 5 px wide.
STRIPES = np.repeat(np.arange(4, dtype=np.int32), 5)[None, :].repeat(6, axis=0)


def test_adjacency_links_only_segments_that_share_an_edge() -> None:
    matrix = adjacency(STRIPES, 4).toarray()
    assert matrix.tolist() == [
        [False, True, False, False],
        [True, False, True, False],
        [False, True, False, True],
        [False, False, True, False],
    ]


@pytest.mark.parametrize("linkage", LINKAGES)
def test_similar_neighbours_merge_first(linkage: str) -> None:
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    tree = MergeTree.build(STRIPES, embeddings, linkage)
    assert tree.clusters(2).tolist() == [0, 0, 1, 1]
    assert tree.cut(STRIPES, 2)[0].tolist() == [0] * 10 + [1] * 10
    assert tree.clusters(4).tolist() == [0, 1, 2, 3] and tree.clusters(1).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("linkage", LINKAGES)
def test_segments_that_do_not_touch_never_merge_before_what_lies_between(linkage: str) -> None:
    # 0 and 2 are identical but 1 separates them: without the adjacency rule they would merge first.
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.2]])
    tree = MergeTree.build(STRIPES, embeddings, linkage)
    first, second = sorted(tree.merges[0].tolist())
    assert second - first == 1, f"first merge {first, second} joins segments that do not touch"


@pytest.mark.parametrize("linkage", LINKAGES)
def test_every_cut_of_a_random_mosaic_has_connected_segments(linkage: str) -> None:
    rng = np.random.default_rng(0)
    # Voronoi mosaic of 12 seeds on a 40 x 40 grid: every cell is one connected segment.
    seeds = rng.uniform(0, 40, (12, 2))
    rows, columns = np.mgrid[:40, :40]
    label_map = np.argmin(
        (rows[..., None] - seeds[:, 0]) ** 2 + (columns[..., None] - seeds[:, 1]) ** 2, axis=-1
    ).astype(np.int32)
    tree = MergeTree.build(label_map, rng.normal(size=(12, 8)), linkage)
    assert len(tree.merges) == 11
    for k in range(1, 13):
        cut = tree.cut(label_map, k)
        assert len(np.unique(cut)) == k
        for value in np.unique(cut):
            assert ndimage.label(cut == value)[1] == 1, f"k={k}: merged segment {value} is in pieces"


def test_tree_navigation() -> None:
    tree = MergeTree(np.array([[0, 1], [2, 3], [4, 5]], np.int32), 4)
    assert tree.parent(0) == 4 and tree.parent(5) == 6 and tree.parent(6) is None
    assert tree.leaves(5) == [2, 3] and tree.leaves(6) == [0, 1, 2, 3]
    assert tree.ancestors(3) == [3, 5, 6]


def test_one_segment_makes_a_tree_without_merges() -> None:
    tree = MergeTree.build(np.zeros((3, 3), np.int32), np.ones((1, 4)))
    assert tree.merges.shape == (0, 2) and tree.clusters(5).tolist() == [0]


@pytest.mark.parametrize(
    "merges",
    [np.array([[0, 1], [0, 2]]), np.array([[0, 5], [1, 2]]), np.array([[0, 1]]), np.array([[0, -1], [1, 2]])],
)
def test_a_stored_tree_that_is_no_tree_is_refused(merges: np.ndarray) -> None:
    with pytest.raises(MergeTreeError):
        MergeTree(merges.astype(np.int32), 3)


def test_label_maps_and_embeddings_must_agree() -> None:
    with pytest.raises(MergeTreeError, match=r"exactly 0\.\.4"):
        MergeTree.build(STRIPES, np.ones((5, 2)))
    with pytest.raises(MergeTreeError, match="finite"):
        MergeTree.build(STRIPES, np.full((4, 2), np.nan))
    with pytest.raises(MergeTreeError, match="linkage"):
        MergeTree.build(STRIPES, np.ones((4, 2)), "centroid")


def test_merged_scores_weigh_parts_by_area() -> None:
    label_map = np.array([[0, 0, 0, 1]], np.int32)
    scores = merged_scores(label_map, {0: 1.0, 1: 0.2}, np.array([0, 0]))
    assert scores == {0: pytest.approx(0.8)}
