"""The plain records a segmentation comes back as."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segmentor.assign import assign_labels


@dataclass(frozen=True)
class Segment:
    id: int
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height in original pixels
    score: float  # mean normalised top-1/top-2 margin of its pixels, in [0, 1]
    embedding: np.ndarray  # mean low-resolution feature of its coarse mask
    low_res_mask: np.ndarray  # bool (h, w) on the feature grid


@dataclass
class Segmentation:
    label_map: np.ndarray  # int32 (H, W) at the original size, values 0..len(segments)-1
    segments: list[Segment]
    low_res_labels: np.ndarray  # int32 (h, w): the coarse labels on the feature grid, -1 where dropped
    features: np.ndarray  # float32 (h, w, C): the low-resolution U-Net features k-means clustered
    coarse_labels: np.ndarray  # int32 (h, w): every coarse mask (k-means cluster or given mask), ids 0..K-1
    timings: dict[str, float] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def mask(self, segment_id: int) -> np.ndarray:
        return self.label_map == segment_id

    def masks(self):
        for segment in self.segments:
            yield segment.id, self.mask(segment.id)

    def baseline_label_map(self) -> np.ndarray:
        """The paper's baseline: all K coarse masks upsampled bilinearly to the original size.

        Values are coarse ids (those of ``coarse_labels``), not segment ids: every coarse mask competes,
        including those EmerDiff dropped, so the baseline inherits none of EmerDiff's choices.
        """
        count = int(self.coarse_labels.max()) + 1
        coarse = np.stack([self.coarse_labels == i for i in range(count)]).astype(np.float32)
        labels, _ = assign_labels(coarse, self.label_map.shape)
        return labels.astype(np.int32)

    def coarse_embeddings(self) -> np.ndarray:
        """(K, C) float32: the mean feature of each coarse mask, indexed by coarse id."""
        count = int(self.coarse_labels.max()) + 1
        return np.stack([self.features[self.coarse_labels == i].mean(axis=0) for i in range(count)])
