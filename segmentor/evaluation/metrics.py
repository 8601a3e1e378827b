"""Segmentation quality metrics: Hungarian-matched mIoU (per image, global, dataset-level), pixel accuracy
and boundary F1. Pure numpy / scipy / scikit-learn; label maps hold any integer ids.

Every metric is built on a per-image confusion matrix between predicted and ground-truth ids, so a set of
any size is scored by keeping only these small matrices (``SetScores``), never the label maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

DEFAULT_IGNORE = 255
DEFAULT_TOLERANCE = 2


class EvaluationError(ValueError):
    """Inputs that cannot be scored (mismatched shapes, no labelled pixels, missing files, ...)."""


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of every (predicted id, ground-truth id) pair, ignore-label pixels left out."""

    pred_ids: np.ndarray  # (P,) int64
    gt_ids: np.ndarray  # (G,) int64
    counts: np.ndarray  # (P, G) int64


@dataclass(frozen=True)
class Matching:
    """The Hungarian matching of one confusion matrix and what it scores."""

    miou: float  # mean over ground-truth ids of the IoU of the matched prediction (unmatched: 0)
    pixel_accuracy: float  # fraction of labelled pixels whose prediction is matched to their ground truth


@dataclass(frozen=True)
class BoundaryScore:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ImageScores:
    miou: float
    pixel_accuracy: float
    boundary: BoundaryScore


def confusion(pred: np.ndarray, gt: np.ndarray, ignore: int | None = DEFAULT_IGNORE) -> Confusion:
    """Count (pred id, gt id) pairs over the pixels whose ground truth is not ``ignore``."""
    pred, gt = _check_pair(pred, gt)
    valid = gt != ignore if ignore is not None else np.ones(gt.shape, bool)
    if not valid.any():
        raise EvaluationError("ground truth has no labelled pixels (everything is the ignore label)")
    pred_ids, pred_index = np.unique(pred[valid], return_inverse=True)
    gt_ids, gt_index = np.unique(gt[valid], return_inverse=True)
    counts = np.bincount(pred_index * len(gt_ids) + gt_index, minlength=len(pred_ids) * len(gt_ids))
    return Confusion(pred_ids, gt_ids, counts.reshape(len(pred_ids), len(gt_ids)).astype(np.int64))


def hungarian_match(table: Confusion) -> Matching:
    """One-to-one matching of predicted to ground-truth ids that maximises the summed IoU."""
    counts = table.counts.astype(np.float64)
    union = counts.sum(axis=1, keepdims=True) + counts.sum(axis=0, keepdims=True) - counts
    iou = np.divide(counts, union, out=np.zeros_like(counts), where=union > 0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return Matching(
        miou=float(iou[rows, cols].sum() / len(table.gt_ids)),
        pixel_accuracy=float(counts[rows, cols].sum() / counts.sum()),
    )


def merge_confusions(tables: Sequence[Confusion], relabel: Sequence[dict[int, int]] | None = None) -> Confusion:
    """Sum confusion matrices over images; ``relabel[i][p]`` renames image i's predicted id p first."""
    if not tables:
        raise EvaluationError("no images to score")
    pred_lists = [t.pred_ids if relabel is None else np.array([relabel[i][int(p)] for p in t.pred_ids], np.int64)
                  for i, t in enumerate(tables)]
    pred_ids = np.unique(np.concatenate(pred_lists))
    gt_ids = np.unique(np.concatenate([t.gt_ids for t in tables]))
    counts = np.zeros((len(pred_ids), len(gt_ids)), np.int64)
    for table, preds in zip(tables, pred_lists, strict=True):
        rows = np.searchsorted(pred_ids, preds)[:, None]
        cols = np.searchsorted(gt_ids, table.gt_ids)[None, :]
        np.add.at(counts, (rows, cols), table.counts)
    return Confusion(pred_ids, gt_ids, counts)


def per_image_miou(pred: np.ndarray, gt: np.ndarray, ignore: int | None = DEFAULT_IGNORE) -> float:
    """mIoU of one image after matching its predicted segments to its ground-truth segments."""
    return hungarian_match(confusion(pred, gt, ignore)).miou


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray, ignore: int | None = DEFAULT_IGNORE) -> float:
    """Fraction of labelled pixels right after the per-image Hungarian matching."""
    return hungarian_match(confusion(pred, gt, ignore)).pixel_accuracy


def global_miou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], ignore: int | None = DEFAULT_IGNORE) -> float:
    """One matching over the whole set; meaningful only when a predicted id means the same in every image."""
    _check_lengths(preds, gts)
    return hungarian_match(merge_confusions([confusion(p, g, ignore) for p, g in zip(preds, gts, strict=True)])).miou


def boundary_f1(pred: np.ndarray, gt: np.ndarray, tolerance: float = DEFAULT_TOLERANCE,
                ignore: int | None = DEFAULT_IGNORE) -> BoundaryScore:
    """Boundary precision, recall and F1: a boundary pixel counts as found within ``tolerance`` pixels.

    A boundary pixel is a labelled pixel with a labelled 4-neighbour of another id (both sides of an edge,
    so the score does not depend on which side is which). Ignore-label pixels are neither boundary nor
    neighbour, in either map. No boundary in either map scores 1; in only one of them, 0.
    """
    pred, gt = _check_pair(pred, gt)
    valid = gt != ignore if ignore is not None else np.ones(gt.shape, bool)
    pred_edges, gt_edges = _boundary(pred, valid), _boundary(gt, valid)
    if not pred_edges.any() and not gt_edges.any():
        return BoundaryScore(1.0, 1.0, 1.0)
    if not pred_edges.any() or not gt_edges.any():
        return BoundaryScore(float(not pred_edges.any()), float(not gt_edges.any()), 0.0)
    precision = float(np.mean(distance_transform_edt(~gt_edges)[pred_edges] <= tolerance))
    recall = float(np.mean(distance_transform_edt(~pred_edges)[gt_edges] <= tolerance))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return BoundaryScore(precision, recall, f1)


def dataset_miou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], embeddings: Sequence[np.ndarray],
                 num_clusters: int | None = None, seed: int = 0, ignore: int | None = DEFAULT_IGNORE) -> float:
    """The paper's dataset-level protocol: k-means over every segment's embedding, one global matching.

    ``embeddings[i]`` is (n_i, C) with row p describing predicted id p of image i (ids 0..n_i-1).
    ``num_clusters`` defaults to the number of ground-truth ids present in the set.
    """
    _check_lengths(preds, gts)
    scores = SetScores(ignore=ignore)
    for pred, gt, vectors in zip(preds, gts, embeddings, strict=True):
        scores.add(pred, gt, dict(enumerate(np.asarray(vectors))))
    return scores.dataset_miou(num_clusters, seed)


@dataclass
class SetScores:
    """Scores a set of images one at a time, keeping only confusion matrices and segment embeddings."""

    ignore: int | None = DEFAULT_IGNORE
    tolerance: float = DEFAULT_TOLERANCE
    images: list[ImageScores] = field(default_factory=list, init=False)
    _tables: list[Confusion] = field(default_factory=list, init=False, repr=False)
    _embeddings: list[dict[int, np.ndarray]] = field(default_factory=list, init=False, repr=False)

    def add(self, pred: np.ndarray, gt: np.ndarray, embeddings: dict[int, np.ndarray] | None = None) -> ImageScores:
        """Score one image; ``embeddings`` (predicted id -> vector, every id of ``pred``) enable ``dataset_miou``."""
        table = confusion(pred, gt, self.ignore)
        if embeddings is not None:
            lacking = sorted(set(table.pred_ids.tolist()) - set(embeddings))
            if lacking:
                raise EvaluationError(f"no embedding for predicted ids {lacking}")
            self._embeddings.append({int(k): np.asarray(v, np.float32) for k, v in embeddings.items()})
        matching = hungarian_match(table)
        scores = ImageScores(matching.miou, matching.pixel_accuracy,
                             boundary_f1(pred, gt, self.tolerance, self.ignore))
        self._tables.append(table)
        self.images.append(scores)
        return scores

    def per_image_miou(self) -> float:
        return float(np.mean([s.miou for s in self._scored()]))

    def pixel_accuracy(self) -> float:
        return float(np.mean([s.pixel_accuracy for s in self._scored()]))

    def boundary_f1(self) -> float:
        return float(np.mean([s.boundary.f1 for s in self._scored()]))

    def global_miou(self) -> float:
        return hungarian_match(merge_confusions(self._tables)).miou

    def num_gt_ids(self) -> int:
        return len(merge_confusions(self._tables).gt_ids)

    def dataset_miou(self, num_clusters: int | None = None, seed: int = 0) -> float:
        """k-means (k-means++, seeded) over the L2-normalised segment embeddings of all images."""
        if len(self._embeddings) != len(self._tables) or not self._tables:
            raise EvaluationError("dataset_miou needs the segment embeddings of every image")
        keys = [(image, segment_id) for image, vectors in enumerate(self._embeddings) for segment_id in vectors]
        stacked = np.stack([self._embeddings[image][segment_id] for image, segment_id in keys]).astype(np.float64)
        stacked /= np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        clusters = min(num_clusters or self.num_gt_ids(), len(np.unique(stacked.round(9), axis=0)))
        labels = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(stacked)
        relabel: list[dict[int, int]] = [{} for _ in self._tables]
        for (image, segment_id), label in zip(keys, labels, strict=True):
            relabel[image][segment_id] = int(label)
        return hungarian_match(merge_confusions(self._tables, relabel)).miou

    def per_image_summary(self) -> dict[str, float]:
        """The means over images: per-image mIoU, boundary F1 and pixel accuracy."""
        return {"per_image_miou": self.per_image_miou(), "boundary_f1": self.boundary_f1(),
                "pixel_accuracy": self.pixel_accuracy()}

    def summary(self, with_dataset_miou: bool = True, num_clusters: int | None = None, seed: int = 0) -> dict:
        """Every score: the per-image means, global mIoU and (given embeddings) dataset-level mIoU."""
        report = {**self.per_image_summary(), "global_miou": self.global_miou()}
        if with_dataset_miou:
            report["dataset_miou"] = self.dataset_miou(num_clusters, seed)
        return report

    def _scored(self) -> list[ImageScores]:
        if not self.images:
            raise EvaluationError("no images to score")
        return self.images


def paired_difference(first: Sequence[float], second: Sequence[float]) -> dict[str, float | None]:
    """Per-image differences first - second: mean, standard error, and the fractions won / tied / lost."""
    if len(first) != len(second) or not first:
        raise EvaluationError(f"paired scores need equal, non-empty lists (got {len(first)} and {len(second)})")
    diff = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    sem = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None
    return {"mean": float(diff.mean()), "sem": sem, "won": float(np.mean(diff > 0)),
            "tied": float(np.mean(diff == 0)), "lost": float(np.mean(diff < 0))}


def _boundary(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    edges = np.zeros(labels.shape, bool)
    for axis in (0, 1):
        before = [slice(None)] * 2
        after = [slice(None)] * 2
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        before, after = tuple(before), tuple(after)
        change = (labels[before] != labels[after]) & valid[before] & valid[after]
        edges[before] |= change
        edges[after] |= change
    return edges


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or gt.ndim != 2:
        raise EvaluationError(f"label maps must be 2-D, got prediction {pred.shape} and ground truth {gt.shape}")
    if pred.shape != gt.shape:
        raise EvaluationError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    for name, array in (("prediction", pred), ("ground truth", gt)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise EvaluationError(f"{name} must hold integer ids, got dtype {array.dtype}")
    return pred.astype(np.int64), gt.astype(np.int64)


def _check_lengths(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> None:
    if len(preds) != len(gts):
        raise EvaluationError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
