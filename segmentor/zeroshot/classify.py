"""Segment labels from the dense grid: pooled inside each segment as label learning pools, then classified.

A segment's embedding is the grid averaged under its mask with ``segmentor.labelling.segment_embeddings``
(cells weighted by the fraction the mask covers: the same pooling the label memory learns from), L2-
normalised; each label's score is the cosine to its best word; a softmax at ``logit_scale`` over the labels
gives the probability that becomes the region's score.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from segmentor.labelling import normalise, segment_embeddings


def label_scores(vectors: np.ndarray, embeddings: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """The labels and (n, n_labels) cosines of ``vectors`` (rows, normalised here) to each label's best word."""
    labels = list(embeddings)
    if not labels:
        raise ValueError("no label embeddings to classify against")
    queries = normalise(vectors)
    scores = np.stack([(queries @ normalise(embeddings[label]).T).max(axis=1) for label in labels], axis=1)
    return labels, scores


def probabilities(scores: np.ndarray, logit_scale: float) -> np.ndarray:
    logits = scores * logit_scale
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classify_segments(grid: np.ndarray, label_map: np.ndarray, embeddings: Mapping[str, np.ndarray], *,
                      logit_scale: float, threshold: float, fallback: str | None) -> dict[int, tuple[str, float]]:
    """Segment id -> (label, probability of the best label).

    Below ``threshold`` a segment gets ``fallback`` (the background label or the control's emerdiff-label)
    with the probability it lost with, so its score says how unsure it is; with ``fallback=None`` it is left
    out (the caller keeps its own default). At exactly ``threshold`` the label stands.
    """
    pooled = segment_embeddings(grid, label_map)
    ids = sorted(pooled)
    if not ids:
        return {}
    labels, scores = label_scores(np.stack([pooled[i] for i in ids]), embeddings)
    chance = probabilities(scores, logit_scale)
    best = chance.argmax(axis=1)
    labelled = {}
    for segment_id, choice, row in zip(ids, best, chance, strict=True):
        probability = float(row[choice])
        if probability >= threshold:
            labelled[segment_id] = (labels[choice], probability)
        elif fallback is not None:
            labelled[segment_id] = (fallback, probability)
    return labelled


def classify_pixels(grid: np.ndarray, embeddings: Mapping[str, np.ndarray], logit_scale: float) -> np.ndarray:
    """(gh, gw) int index into ``list(embeddings)`` of each cell's best label (the per-pixel CLIP baseline).

    ``logit_scale`` does not change the argmax; it is taken so both classifiers are called alike.
    """
    rows, cols, depth = grid.shape
    _, scores = label_scores(grid.reshape(-1, depth), embeddings)
    return probabilities(scores, logit_scale).argmax(axis=1).reshape(rows, cols).astype(np.int64)
