"""A cached segmentation at any coarser K, cut from its merge tree (``segmentor.merge_tree``)."""

from __future__ import annotations

import logging

import numpy as np

from ml_backend.segmentation.cache import CachedSegmentation
from segmentor.merge_tree import MergeTree, MergeTreeError, merged_scores

logger = logging.getLogger(__name__)


def merge_tree(segmentation: CachedSegmentation) -> MergeTree | None:
    """The segmentation's merge tree: the cached one, else built from its features (entries cached
    before trees were); None when it has neither, and then no coarser level exists."""
    num_segments = int(segmentation.label_map.max()) + 1
    try:
        if segmentation.merges is not None:
            return MergeTree(segmentation.merges, num_segments)
        embeddings = segmentation.embeddings()
        if sorted(embeddings) != list(range(num_segments)):
            return None
        return MergeTree.build(segmentation.label_map, np.stack([embeddings[i] for i in range(num_segments)]))
    except MergeTreeError as error:
        logger.warning("no merge tree for this segmentation (%s); it keeps its own segments", error)
        return None


def at_level(segmentation: CachedSegmentation, num_segments: int | None) -> CachedSegmentation:
    """``segmentation`` merged down to ``num_segments`` (unchanged when it has that many or fewer)."""
    if num_segments is None or int(segmentation.label_map.max()) + 1 <= num_segments:
        return segmentation
    tree = merge_tree(segmentation)
    if tree is None:
        return segmentation
    clusters = tree.clusters(num_segments)
    low_res = segmentation.low_res_labels
    return CachedSegmentation(
        label_map=clusters[segmentation.label_map],
        scores=merged_scores(segmentation.label_map, segmentation.scores, clusters),
        features=segmentation.features,
        low_res_labels=None if low_res is None else np.where(low_res >= 0, clusters[np.maximum(low_res, 0)], -1),
    )
