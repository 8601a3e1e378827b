"""Every coarser segmentation from one fine one: a merge tree over the segments.

Agglomerative clustering of the segments' embeddings (the mean U-Net feature of each coarse mask), where
only segments that touch in the label map may merge, so every node of the tree is one spatially connected
group of segments. Cutting the tree after ``n - k`` merges gives ``k`` segments without a new run of the
model. The tree follows scikit-learn's (and scipy's) convention: leaves are the segment ids ``0..n-1``,
merge ``i`` creates node ``n + i`` from the two nodes in ``merges[i]``.

Merging lifted masks is not the same as lifting merged coarse masks: ``docs/QUALITY.md`` measures the
difference against segmentations computed directly at each K, and the linkage chosen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from sklearn.cluster import AgglomerativeClustering

LINKAGES = ("ward", "average", "complete", "single")
# Chosen by measurement on the synthetic scenes (docs/QUALITY.md, "Granularity from one segmentation").
DEFAULT_LINKAGE = "single"


class MergeTreeError(ValueError):
    """A label map, embedding table or stored tree that cannot make (or be) a merge tree."""


@dataclass(frozen=True)
class MergeTree:
    merges: np.ndarray  # int32 (n - 1, 2): the two nodes merge i joins into node n + i, in merge order
    num_leaves: int

    def __post_init__(self) -> None:
        merges = np.asarray(self.merges)
        n = self.num_leaves
        if n < 1 or merges.shape != (n - 1, 2) or merges.dtype.kind not in "iu":
            raise MergeTreeError(f"a tree of {n} leaves needs ({n - 1}, 2) integer merges, got {merges.shape}")
        # Each merge joins two distinct nodes that already exist and have no parent yet.
        if len(merges) and (
            (merges.min() < 0)
            or (merges.max(axis=1) >= n + np.arange(len(merges))).any()
            or len(np.unique(merges)) != merges.size
        ):
            raise MergeTreeError("merges do not form a tree (a node merged twice or before it exists)")

    @classmethod
    def build(
        cls, label_map: np.ndarray, embeddings: np.ndarray, linkage: str = DEFAULT_LINKAGE
    ) -> MergeTree:
        """The tree of a label map with values ``0..n-1`` and one embedding row per segment (n, C)."""
        if linkage not in LINKAGES:
            raise MergeTreeError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
        embeddings = np.asarray(embeddings, dtype=np.float64)
        n = len(embeddings)
        if embeddings.ndim != 2 or n == 0 or not np.isfinite(embeddings).all():
            raise MergeTreeError(f"embeddings must be a finite (n, C) array, got shape {embeddings.shape}")
        connectivity = adjacency(label_map, n)
        if n == 1:
            return cls(np.zeros((0, 2), np.int32), 1)
        # Unit length: diffusion features compare by direction; ward/average then act on cosine geometry.
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        clustering = AgglomerativeClustering(
            n_clusters=1, connectivity=connectivity, linkage=linkage, compute_full_tree=True
        ).fit(unit)
        return cls(clustering.children_.astype(np.int32), n)

    @cached_property
    def parents(self) -> np.ndarray:
        """Parent node of every node (``2n - 1`` of them); -1 for the root."""
        parents = np.full(2 * self.num_leaves - 1, -1, np.int64)
        for index, (left, right) in enumerate(self.merges):
            parents[left] = parents[right] = self.num_leaves + index
        return parents

    def parent(self, node: int) -> int | None:
        """The node one level up (``node`` merged with its sibling), None at the root."""
        parent = int(self.parents[node])
        return None if parent < 0 else parent

    def leaves(self, node: int) -> list[int]:
        """The segment ids under ``node``, ascending."""
        stack, found = [int(node)], []
        while stack:
            current = stack.pop()
            if current < self.num_leaves:
                found.append(current)
            else:
                stack.extend(int(child) for child in self.merges[current - self.num_leaves])
        return sorted(found)

    def ancestors(self, node: int) -> list[int]:
        """``node`` and every node above it, bottom-up."""
        chain = [int(node)]
        while (parent := self.parent(chain[-1])) is not None:
            chain.append(parent)
        return chain

    def clusters(self, k: int) -> np.ndarray:
        """Cluster of each leaf (n,) after the first ``n - k`` merges, numbered by their smallest leaf."""
        n = self.num_leaves
        k = min(max(int(k), 1), n)
        last = 2 * n - k  # nodes below this id exist after n - k merges
        tops = np.arange(n)
        while True:  # climb every leaf to its highest existing ancestor (at most the tree's height)
            parents = self.parents[tops]
            climbing = (parents >= 0) & (parents < last)
            if not climbing.any():
                break
            tops = np.where(climbing, parents, tops)
        # Number the clusters in the order of their smallest leaf, so that a cut keeps the ids' order.
        _, first_leaf, cluster = np.unique(tops, return_index=True, return_inverse=True)
        rank = np.empty(len(first_leaf), np.int32)
        rank[np.argsort(first_leaf)] = np.arange(len(first_leaf), dtype=np.int32)
        return rank[cluster]

    def cut(self, label_map: np.ndarray, k: int) -> np.ndarray:
        """``label_map`` with its segments merged down to ``k`` (fewer only when it has fewer)."""
        return self.clusters(k)[label_map]


def adjacency(label_map: np.ndarray, num_segments: int) -> sparse.csr_matrix:
    """Which segments share an edge (4-neighbourhood) in ``label_map``, as a symmetric (n, n) matrix."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or label_map.dtype.kind not in "iu" or label_map.size == 0:
        raise MergeTreeError(f"label map must be a non-empty 2-D integer array, got {label_map.shape}")
    present = np.unique(label_map)
    if present[0] < 0 or present[-1] >= num_segments or len(present) != num_segments:
        raise MergeTreeError(
            f"label map values must be exactly 0..{num_segments - 1} (one per embedding), "
            f"found {len(present)} values in [{present[0]}, {present[-1]}]"
        )
    pairs = [
        np.stack([label_map[:, :-1].ravel(), label_map[:, 1:].ravel()]),
        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()]),
    ]
    left, right = np.concatenate(pairs, axis=1)
    touching = left != right
    rows, cols = left[touching], right[touching]
    matrix = sparse.coo_matrix(
        (np.ones(2 * len(rows), bool), (np.r_[rows, cols], np.r_[cols, rows])),
        shape=(num_segments, num_segments),
    )
    return matrix.tocsr()


def merged_scores(label_map: np.ndarray, scores: dict[int, float], clusters: np.ndarray) -> dict[int, float]:
    """Score of each merged segment: its parts' scores weighted by their areas."""
    areas = np.bincount(np.asarray(label_map).ravel(), minlength=len(clusters)).astype(np.float64)
    weights = np.array([scores.get(leaf, 0.0) for leaf in range(len(clusters))]) * areas
    total_area = np.bincount(clusters, weights=areas)
    total_score = np.bincount(clusters, weights=weights)
    return {int(c): float(total_score[c] / total_area[c]) for c in np.flatnonzero(total_area > 0)}
