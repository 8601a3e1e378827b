"""Scores of a labelling of segments against ground truth (``evaluate-labels``: learnt, baselines, zero-shot)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentedImage:
    name: str
    image: np.ndarray  # uint8 (H, W, 3)
    gt: np.ndarray  # int (H, W) class ids
    label_map: np.ndarray  # int32 (H, W) EmerDiff segments
    features: np.ndarray  # float32 (h, w, C)
    baseline_map: np.ndarray | None = None  # int32 (H, W): the bilinear baseline's segments (zero-shot comparison)


def region_majority(label_map: np.ndarray, gt: np.ndarray, ignore: int | None) -> dict[int, int]:
    """Segment id -> the ground-truth class most of its labelled pixels have (segments with none left out)."""
    majority = {}
    for segment in np.unique(label_map):
        under = gt[(label_map == segment) & (gt != ignore)] if ignore is not None else gt[label_map == segment]
        if under.size:
            majority[int(segment)] = int(np.bincount(under).argmax())
    return majority


class LabelScores:
    """Confusion of predicted vs true classes over pixels, and region hits, summed over test images."""

    def __init__(self, num_classes: int, ignore: int | None) -> None:
        self.pixels = np.zeros((num_classes, num_classes), np.int64)  # [true, predicted]
        self.regions = [0, 0]  # right, total
        self.num_classes = num_classes
        self.ignore = ignore

    def add(self, image: SegmentedImage, classes: dict[int, int], majority: dict[int, int]) -> None:
        lookup = np.full(int(image.label_map.max()) + 1, -1, np.int64)
        for segment, class_id in classes.items():
            lookup[segment] = class_id
        predicted = lookup[image.label_map]
        valid = (image.gt != self.ignore) if self.ignore is not None else np.ones(image.gt.shape, bool)
        valid &= (image.gt >= 0) & (image.gt < self.num_classes) & (predicted >= 0)
        np.add.at(self.pixels, (image.gt[valid], predicted[valid]), 1)
        for segment, true_class in majority.items():
            self.regions[0] += int(classes.get(segment) == true_class)
            self.regions[1] += 1

    def summary(self, class_names: Sequence[str]) -> dict:
        per_class = self.pixels.sum(axis=1)
        recall = {name: (float(self.pixels[k, k] / per_class[k]) if per_class[k] else None)
                  for k, name in enumerate(class_names)}
        present = [value for value in recall.values() if value is not None]
        return {
            "pixel_accuracy": float(np.trace(self.pixels) / max(self.pixels.sum(), 1)),
            "class_mean_accuracy": float(np.mean(present)) if present else 0.0,
            "region_accuracy": self.regions[0] / max(self.regions[1], 1),
            "per_class_recall": recall,
        }
