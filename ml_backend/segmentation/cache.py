"""Segmentations on disk, keyed by the image's content and the segmentation's fingerprint.

Layout: ``CACHE_DIR/<fingerprint>/<sha256[:2]>/<sha256>.npz`` (the arrays, compressed) beside
``<sha256>.json`` (segment scores and the SHA-256 and size of the ``.npz``). The ``.npz`` is written
first and the ``.json`` last, each to a temporary name moved into place with ``os.replace``: an entry
exists once its ``.json`` does, and readers never see half a file.

The cache heals: an entry whose ``.npz`` does not match its checksum (truncated, bit-flipped, replaced),
whose ``.json`` is unreadable, or whose arrays are not what a segmentation holds is evicted and counts
as a miss, so the image is segmented again and the entry rewritten. Temporary files that a killed
writer left behind are removed at start-up. The folder is bounded by CACHE_MAX_BYTES, least recently used
entries first (a hit refreshes an entry's time).

The bound costs O(1) per write: the folder's size is a running total in ``CACHE_DIR/.size``, shared by
every process using the folder (a gunicorn worker, Ray actors, the ``segment`` CLI) under an ``flock`` on
``.size.lock``; each write adds its bytes. Only when the total passes the bound is the folder scanned,
and entries go until it holds at most ``_LOW_WATER`` of the bound, so the next scan is many writes away.
The total is set from a scan at start-up and every ``_RECONCILE_WRITES`` writes or ``_RECONCILE_S``
seconds, which corrects drift from files removed by hand or a process killed between write and count.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import SettingsError

logger = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{8,64}$")
# Temporary files older than this are left-overs of a killed writer (a live write takes milliseconds).
_STALE_TEMPORARY_S = 600.0
# The running total of the folder's bytes and the lock that serialises its updates across processes.
SIZE_FILE, SIZE_LOCK = ".size", ".size.lock"
# A scan evicts down to this fraction of the bound: one scan pays for many writes.
_LOW_WATER = 0.9
# The running total is set again from a scan this often (drift: files removed by hand, killed writers).
_RECONCILE_WRITES, _RECONCILE_S = 1000, 600.0


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
    merges: np.ndarray | None = None  # int32 (n - 1, 2): the merge tree over the segments (segmentor.merge_tree)

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

    def __init__(self, root: Path | None, *, max_bytes: int | None = None, metrics: Metrics | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.check_writable(root)
        self._writes_since_scan = 0
        self._last_scan = 0.0
        if root is not None:
            self._remove_stale_temporaries()
            if max_bytes is not None:
                self._scan()

    @staticmethod
    def check_writable(root: Path | None) -> None:
        """:class:`SettingsError` unless ``root`` is (or can be made) a writable folder; None passes."""
        if root is None:
            return
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
        if not scores_path.exists():
            return None
        try:
            entry = _load(label_path, scores_path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as error:
            logger.warning("cache entry %s is corrupt (%s): evicted, segmenting again", label_path, error)
            self._evict(label_path, scores_path, "corrupt")
            return None
        # A hit makes the entry the most recently used (its .json's time is the entry's).
        with contextlib.suppress(OSError):
            os.utime(scores_path)
        return entry

    def contains(self, image_sha256: str, fingerprint: str) -> bool:
        """Whether the entry exists (it may still turn out corrupt when read)."""
        return self.root is not None and self._paths(image_sha256, fingerprint)[1].exists()

    def put(self, image_sha256: str, fingerprint: str, segmentation: CachedSegmentation) -> None:
        """Store ``segmentation``; a disk failure is logged, never raised (the prediction still stands)."""
        if self.root is None:
            return
        label_path, scores_path = self._paths(image_sha256, fingerprint)
        replaced = _entry_bytes(label_path, scores_path)  # an entry rewritten (healed, raced) is counted once
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **_arrays(segmentation))
        arrays = buffer.getvalue()
        record = {
            "scores": {str(key): value for key, value in segmentation.scores.items()},
            "npz_sha256": hashlib.sha256(arrays).hexdigest(),
            "npz_bytes": len(arrays),
        }
        try:
            label_path.parent.mkdir(parents=True, exist_ok=True)
            # An old record goes first: a rewrite killed between the two moves below would otherwise pair
            # it with the new arrays, an entry that reads as corrupt. Arrays next: the entry exists once
            # its .json is in place.
            scores_path.unlink(missing_ok=True)
            _write_atomic(label_path, arrays)
            _write_atomic(scores_path, json.dumps(record).encode())
        except OSError as error:
            logger.warning("cannot write cache entry %s (%s); the prediction is unaffected", label_path, error)
            with contextlib.suppress(OSError):
                label_path.unlink(missing_ok=True)
            return
        if self.max_bytes is not None:
            self._enforce_bound(_entry_bytes(label_path, scores_path) - replaced)

    def _enforce_bound(self, added: int) -> None:
        """Add ``added`` bytes to the running total; scan and evict only when it passes ``max_bytes``."""
        self._writes_since_scan += 1
        due = self._writes_since_scan >= _RECONCILE_WRITES or time.monotonic() - self._last_scan >= _RECONCILE_S
        with self._size_lock():
            total = self._read_total() + added
            if total <= self.max_bytes and not due:
                self._write_total(total)
                return
            self._scan_locked()

    def _scan(self) -> None:
        """Set the running total from the folder (start-up), evicting when it is over the bound."""
        with self._size_lock():
            self._scan_locked()

    def _scan_locked(self) -> int:
        """Stat every entry and set the running total; over the bound, evict least recently used entries
        down to ``_LOW_WATER`` of it. Returns the new total."""
        self._writes_since_scan, self._last_scan = 0, time.monotonic()
        if self.metrics is not None:
            self.metrics.increment("cache_bound", "scans")
        entries = []
        for label_path in self.root.glob("*/*/*.npz"):
            scores_path = label_path.with_suffix(".json")
            try:
                size = label_path.stat().st_size
                used = scores_path.stat().st_mtime if scores_path.exists() else 0.0
                size += scores_path.stat().st_size if scores_path.exists() else 0
            except OSError:
                continue  # evicted meanwhile
            entries.append((used, size, label_path, scores_path))
        total = sum(size for _, size, _, _ in entries)
        if total > self.max_bytes:
            evict_to = int(self.max_bytes * _LOW_WATER)
            for _, size, label_path, scores_path in sorted(entries, key=lambda entry: entry[0]):
                if total <= evict_to:
                    break
                self._evict(label_path, scores_path, "evictions")
                total -= size
        self._write_total(total)
        return total

    @contextlib.contextmanager
    def _size_lock(self) -> Iterator[None]:
        with open(self.root / SIZE_LOCK, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_total(self) -> int:
        try:
            return int((self.root / SIZE_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return self.max_bytes + 1  # lost or damaged: count as over the bound, so a scan sets it again

    def _write_total(self, total: int) -> None:
        with contextlib.suppress(OSError):
            _write_atomic(self.root / SIZE_FILE, str(max(0, total)).encode())

    def _evict(self, label_path: Path, scores_path: Path, event: str) -> None:
        # The .json goes first: without it the entry no longer exists, whatever happens next.
        with contextlib.suppress(OSError):
            scores_path.unlink(missing_ok=True)
            label_path.unlink(missing_ok=True)
        if self.metrics is not None:
            self.metrics.increment("cache", event)

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - _STALE_TEMPORARY_S
        for temporary in self.root.glob("*/*/.*.tmp"):
            with contextlib.suppress(OSError):
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()
                    logger.info("removed %s, left behind by an interrupted write", temporary)

    def _paths(self, image_sha256: str, fingerprint: str) -> tuple[Path, Path]:
        # Both parts come from our own hashes; checking keeps a bug from ever writing outside root.
        if not (_HEX.match(image_sha256) and _HEX.match(fingerprint)):
            raise ValueError(f"cache keys must be hex digests, got {image_sha256!r} / {fingerprint!r}")
        folder = self.root / fingerprint / image_sha256[:2]
        return folder / f"{image_sha256}.npz", folder / f"{image_sha256}.json"


def _load(label_path: Path, scores_path: Path) -> CachedSegmentation:
    """The entry, verified; ValueError (or OSError...) when any part of it is not what was written."""
    record = json.loads(scores_path.read_text())
    arrays = label_path.read_bytes()
    if len(arrays) != record["npz_bytes"] or hashlib.sha256(arrays).hexdigest() != record["npz_sha256"]:
        raise ValueError("the arrays do not match their checksum")
    scores = {int(key): float(value) for key, value in record["scores"].items()}
    with np.load(io.BytesIO(arrays), allow_pickle=False) as stored:
        label_map = stored["label_map"]
        features = stored["features"].astype(np.float32) if "features" in stored else None
        low_res_labels = stored["low_res_labels"].astype(np.int32) if "low_res_labels" in stored else None
        merges = stored["merges"].astype(np.int32) if "merges" in stored else None
    if label_map.ndim != 2 or label_map.dtype.kind not in "iu":
        raise ValueError("it holds no label map")
    return CachedSegmentation(
        label_map=label_map.astype(np.int32, copy=False),
        scores=scores,
        features=features,
        low_res_labels=low_res_labels,
        merges=merges,
    )


def stored_features(features: np.ndarray) -> np.ndarray:
    """``features`` at the precision the cache keeps them (float16 halves the entry), as float32.

    A fresh segmentation is rounded the same way before it is used, so its first answer equals every
    later answer from the cache (label confidences, merge trees).
    """
    return features.astype(np.float16).astype(np.float32)


def _arrays(segmentation: CachedSegmentation) -> dict[str, np.ndarray]:
    arrays = {"label_map": segmentation.label_map}
    if segmentation.features is not None and segmentation.low_res_labels is not None:
        arrays["features"] = segmentation.features.astype(np.float16)
        arrays["low_res_labels"] = segmentation.low_res_labels
    if segmentation.merges is not None:
        arrays["merges"] = segmentation.merges
    return arrays


def _entry_bytes(label_path: Path, scores_path: Path) -> int:
    """Bytes of one entry on disk (two stats); 0 for what does not exist."""
    size = 0
    for path in (label_path, scores_path):
        with contextlib.suppress(OSError):
            size += path.stat().st_size
    return size


def _write_atomic(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
