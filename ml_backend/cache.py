"""Segmentations on disk, keyed by the image's content and the segmentation's fingerprint.

Layout: ``CACHE_DIR/<fingerprint>/<sha256[:2]>/<sha256>.npz`` (the label map, compressed) beside
``<sha256>.json`` (segment scores). Each file is written to a temporary name and moved into place with
``os.replace``, so readers never see half a file and a crash leaves no corrupt entry; an entry that
cannot be read anyway (disk trouble, manual edits) counts as a miss and is rewritten. Nothing is
evicted: delete the folder (or one fingerprint's sub-folder) to reclaim space.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ml_backend.settings import SettingsError

logger = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class CachedSegmentation:
    """What predictions need of a segmentation: the label map, each segment's score, and the features.

    ``features`` and ``low_res_labels`` are what label learning and merging need without a new
    segmentation: the low-resolution U-Net feature grid k-means ran on (float16 on disk) and each grid
    cell's segment id (-1 where the coarse mask won no pixel).
    """

    label_map: np.ndarray  # int32 (H, W), values are segment ids
    scores: dict[int, float]  # segment id -> confidence in [0, 1]
    features: np.ndarray | None = None  # float32 (h, w, C) feature grid
    low_res_labels: np.ndarray | None = None  # int32 (h, w) segment id per grid cell, -1 where none

    def embeddings(self) -> dict[int, np.ndarray]:
        """Segment id -> mean feature of its coarse mask (``Segment.embedding``), from the cached grid."""
        if self.features is None or self.low_res_labels is None:
            return {}
        return {
            int(segment_id): self.features[self.low_res_labels == segment_id].mean(axis=0)
            for segment_id in np.unique(self.low_res_labels)
            if segment_id >= 0
        }

    @property
    def mean_score(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else 0.0


class SegmentationCache:
    """The disk store; ``root=None`` turns it off (every lookup misses, nothing is written)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        if root is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=root).close()
            except OSError as error:
                raise SettingsError(
                    f"CACHE_DIR={str(root)!r}: not a writable folder ({error.strerror}); "
                    "point it at one, or set CACHE_DIR=off"
                ) from error

    def get(self, image_sha256: str, fingerprint: str) -> CachedSegmentation | None:
        if self.root is None:
            return None
        label_path, scores_path = self._paths(image_sha256, fingerprint)
        if not label_path.exists():
            return None
        try:
            with np.load(label_path, allow_pickle=False) as stored:
                label_map = stored["label_map"]
                features = stored["features"].astype(np.float32) if "features" in stored else None
                low_res_labels = stored["low_res_labels"].astype(np.int32) if "low_res_labels" in stored else None
            raw_scores = json.loads(scores_path.read_text())["scores"]
            scores = {int(key): float(value) for key, value in raw_scores.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            logger.warning("cache entry %s is unreadable (%s); segmenting again", label_path, error)
            return None
        if label_map.ndim != 2 or label_map.dtype.kind not in "iu":
            logger.warning("cache entry %s holds no label map; segmenting again", label_path)
            return None
        return CachedSegmentation(
            label_map=label_map.astype(np.int32, copy=False),
            scores=scores,
            features=features,
            low_res_labels=low_res_labels,
        )

    def put(self, image_sha256: str, fingerprint: str, segmentation: CachedSegmentation) -> None:
        """Store ``segmentation``; a disk failure is logged, never raised (the prediction still stands)."""
        if self.root is None:
            return
        label_path, scores_path = self._paths(image_sha256, fingerprint)
        scores = {"scores": {str(key): value for key, value in segmentation.scores.items()}}
        try:
            label_path.parent.mkdir(parents=True, exist_ok=True)
            # Scores first: an entry counts as present once its label map is in place.
            _write_atomic(scores_path, lambda handle: handle.write(json.dumps(scores).encode()))
            _write_atomic(label_path, lambda handle: np.savez_compressed(handle, **_arrays(segmentation)))
        except OSError as error:
            logger.warning("cannot write cache entry %s (%s)", label_path, error)

    def _paths(self, image_sha256: str, fingerprint: str) -> tuple[Path, Path]:
        # Both parts come from our own hashes; checking keeps a bug from ever writing outside root.
        if not (_HEX.match(image_sha256) and _HEX.match(fingerprint)):
            raise ValueError(f"cache keys must be hex digests, got {image_sha256!r} / {fingerprint!r}")
        folder = self.root / fingerprint / image_sha256[:2]
        return folder / f"{image_sha256}.npz", folder / f"{image_sha256}.json"


def _arrays(segmentation: CachedSegmentation) -> dict[str, np.ndarray]:
    arrays = {"label_map": segmentation.label_map}
    if segmentation.features is not None and segmentation.low_res_labels is not None:
        # float16 halves the entry; label learning compares normalised features, where it costs nothing.
        arrays["features"] = segmentation.features.astype(np.float16)
        arrays["low_res_labels"] = segmentation.low_res_labels
    return arrays


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
