"""Segment a set of images with EmerDiff and score it against ground truth, beside the paper's baseline.

Per image, two segmentations: the normal one (k-means masks lifted by modulated denoising, ``emerdiff``,
and the same masks upsampled bilinearly, ``baseline``), and the oracle one (ground-truth masks pooled to
the feature grid, lifted by EmerDiff, ``oracle_emerdiff``, or upsampled, ``oracle_baseline``). The oracle
pair isolates the lift step: given good coarse masks, does modulated denoising beat upsampling?
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt
from tqdm import tqdm

from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.evaluation.data import Sample
from segmentor.evaluation.metrics import DEFAULT_IGNORE, EvaluationError, ImageScores, SetScores, paired_difference
from segmentor.result import Segmentation

METHODS = ("emerdiff", "baseline", "oracle_emerdiff", "oracle_baseline")
PAIRS = {
    "emerdiff_minus_baseline": ("emerdiff", "baseline"),
    "oracle_emerdiff_minus_oracle_baseline": ("oracle_emerdiff", "oracle_baseline"),
}
_PAIRED_SCORES = {
    "per_image_miou": lambda s: s.miou,
    "boundary_f1": lambda s: s.boundary.f1,
    "pixel_accuracy": lambda s: s.pixel_accuracy,
}
NOTES = {
    "per_image_miou": "Hungarian matching of predicted to ground-truth segments in each image (IoU-maximising), "
                      "mean over ground-truth segments, unmatched ones 0; averaged over images",
    "global_miou": "one Hungarian matching over the whole set; meaningful only for the oracle rows, whose "
                   "segments carry their ground-truth id. For emerdiff/baseline the ids are per-image k-means "
                   "cluster numbers that mean nothing across images: read dataset_miou instead",
    "dataset_miou": "the paper's protocol: k-means (seeded) over the L2-normalised embeddings of every segment of "
                    "every image, to the number of ground-truth classes present; one global Hungarian matching",
    "boundary_f1": "boundary F1 with a 2-pixel tolerance, averaged over images",
    "pixel_accuracy": "fraction of labelled pixels right after the per-image matching, averaged over images",
    "instance_gt": "the same per-image scores against instance maps (scenes only): separate objects of one "
                   "class are separate segments there",
    "paired": "per-image differences; sem = standard error of the mean; won/tied/lost = fraction of images",
}


def oracle_masks(gt: np.ndarray, grid: tuple[int, int], ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth pooled to the feature grid: (n, h, w) disjoint bool masks covering it, and their gt ids.

    Each id's one-hot map is area-averaged onto the grid and each cell goes to its largest id; ids that
    win no cell vanish. Cells holding only ignore-label pixels take the id of the nearest labelled cell.
    """
    valid = gt != ignore if ignore is not None else np.ones(gt.shape, bool)
    ids = np.unique(gt[valid])
    if not len(ids):
        raise EvaluationError("ground truth has no labelled pixels to build oracle masks from")
    height, width = grid
    pooled = np.stack([cv2.resize((gt == i).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
                       for i in ids])
    winner = np.argmax(pooled, axis=0)
    empty = pooled.sum(axis=0) <= 0
    if empty.any():
        nearest = distance_transform_edt(empty, return_distances=False, return_indices=True)
        winner = winner[nearest[0], nearest[1]]
    present = np.unique(winner)
    return np.stack([winner == k for k in present]), ids[present]


def evaluate(segmentor: EmerDiffSegmentor, samples: Iterable[Sample], ignore: int | None = DEFAULT_IGNORE,
             seed: int = 0, total: int | None = None, progress: bool = True) -> dict:
    """Segment and score every sample; the report of ``python -m segmentor evaluate`` (without its header)."""
    scores = {method: SetScores(ignore=ignore) for method in METHODS}
    instance_scores = {method: SetScores(ignore=ignore) for method in ("emerdiff", "baseline")}
    per_image, skipped, seconds = [], [], []
    for sample in tqdm(samples, total=total, desc="evaluate", unit="image", disable=not progress):
        if ignore is not None and not (sample.gt != ignore).any():
            skipped.append(sample.name)
            continue
        result = segmentor.segment(sample.image)
        masks, gt_ids = oracle_masks(sample.gt, segmentor.feature_grid(sample.image.shape), ignore)
        oracle = segmentor.segment(sample.image, low_res_masks=masks)
        seconds.append(result.timings.get("total", 0.0) + oracle.timings.get("total", 0.0))
        to_gt = _oracle_ids(oracle, masks, gt_ids)
        coarse_to_gt = _oracle_coarse_ids(oracle, masks, gt_ids)
        found, lifted = _embeddings(result, np.arange(len(result.segments))), _embeddings(oracle, to_gt)
        # The baselines upsample every coarse mask (coarse ids), not only the ones EmerDiff kept.
        coarse = dict(enumerate(result.coarse_embeddings()))
        oracle_coarse = dict(zip(coarse_to_gt.tolist(), oracle.coarse_embeddings(), strict=True))
        predictions = {
            "emerdiff": (result.label_map, found),
            "baseline": (result.baseline_label_map(), coarse),
            "oracle_emerdiff": (to_gt[oracle.label_map], lifted),
            "oracle_baseline": (coarse_to_gt[oracle.baseline_label_map()], oracle_coarse),
        }
        image_scores: dict[str, ImageScores] = {}
        for method, (label_map, embeddings) in predictions.items():
            image_scores[method] = scores[method].add(label_map, sample.gt, embeddings)
            if sample.instance_gt is not None and method in instance_scores:
                instance_scores[method].add(label_map, sample.instance_gt)
        per_image.append({"name": sample.name, **{m: _image_record(s) for m, s in image_scores.items()}})
    if not per_image:
        raise EvaluationError("no image with labelled ground truth to evaluate" +
                              (f" ({len(skipped)} skipped: all ignore label)" if skipped else ""))
    report = {method: scores[method].summary(seed=seed) for method in METHODS}
    if instance_scores["emerdiff"].images:
        for method, set_scores in instance_scores.items():
            report[method]["instance_gt"] = set_scores.per_image_summary()  # instance ids differ across images
    report["paired"] = {
        pair: {name: paired_difference([read(s) for s in scores[first].images],
                                       [read(s) for s in scores[second].images])
               for name, read in _PAIRED_SCORES.items()}
        for pair, (first, second) in PAIRS.items()
    }
    report.update(images=len(per_image), skipped=skipped, dataset_clusters=scores["emerdiff"].num_gt_ids(),
                  seconds_per_image=float(np.mean(seconds)), notes=NOTES, per_image=per_image)
    return report


def segmentor_config_record(segmentor: EmerDiffSegmentor) -> dict:
    return {**dataclasses.asdict(segmentor.config), "fingerprint": segmentor.fingerprint()}


def _oracle_ids(oracle: Segmentation, masks: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """Lookup from the oracle's segment ids to the ground-truth ids whose pooled masks they lift."""
    lookup = np.empty(len(oracle.segments), np.int64)
    for segment in oracle.segments:
        matches = [k for k, mask in enumerate(masks) if np.array_equal(mask, segment.low_res_mask)]
        if len(matches) != 1:
            raise EvaluationError(f"oracle segment {segment.id} does not correspond to one given mask")
        lookup[segment.id] = gt_ids[matches[0]]
    return lookup


def _oracle_coarse_ids(oracle: Segmentation, masks: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """Lookup from the oracle's coarse ids to the ground-truth ids of the given masks they are."""
    count = int(oracle.coarse_labels.max()) + 1
    lookup = np.empty(count, np.int64)
    for coarse_id in range(count):
        matches = [k for k, mask in enumerate(masks) if np.array_equal(mask, oracle.coarse_labels == coarse_id)]
        if len(matches) != 1:
            raise EvaluationError(f"oracle coarse mask {coarse_id} does not correspond to one given mask")
        lookup[coarse_id] = gt_ids[matches[0]]
    return lookup


def _embeddings(result: Segmentation, ids: np.ndarray) -> dict[int, np.ndarray]:
    """Each segment's embedding under the id the scored label map gives it (``ids[segment.id]``)."""
    return {int(ids[segment.id]): segment.embedding for segment in result.segments}


def _image_record(scores: ImageScores) -> dict[str, float]:
    return {"miou": scores.miou, "boundary_f1": scores.boundary.f1, "pixel_accuracy": scores.pixel_accuracy}
