"""CACHE_MAX_BYTES at O(1) per write: a running total shared through the folder, scans only past the bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ml_backend.core.metrics import Metrics
from ml_backend.segmentation.cache import SIZE_FILE, CachedSegmentation, SegmentationCache

FINGERPRINT = "0123456789ab"
REPO_ROOT = Path(__file__).resolve().parents[2]


def sample(seed: int) -> CachedSegmentation:
    # Random labels barely compress: every entry takes about the same bytes.
    rng = np.random.default_rng(seed)
    return CachedSegmentation(label_map=rng.integers(0, 2**31 - 1, (40, 40)).astype(np.int32), scores={0: 0.5})


def key(number: int) -> str:
    return f"{number:064x}"


def folder_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.glob("*/*/*") if path.suffix in (".npz", ".json"))


def recorded_total(root: Path) -> int:
    return int((root / SIZE_FILE).read_text())


def test_writes_under_the_bound_add_to_the_total_without_scanning(tmp_path: Path) -> None:
    metrics = Metrics()
    cache = SegmentationCache(tmp_path, max_bytes=10**9, metrics=metrics)
    for number in range(30):
        cache.put(key(number), FINGERPRINT, sample(number))
    assert metrics.count("cache_bound", "scans") == 1  # the start-up scan only
    assert recorded_total(tmp_path) == folder_bytes(tmp_path)
    # Rewriting an entry (healing, two writers racing) counts its bytes once.
    cache.put(key(0), FINGERPRINT, sample(0))
    assert recorded_total(tmp_path) == folder_bytes(tmp_path)


def test_passing_the_bound_evicts_below_it_then_writes_go_on_without_scans(tmp_path: Path) -> None:
    probe = SegmentationCache(tmp_path / "probe")
    probe.put(key(0), FINGERPRINT, sample(0))
    entry = folder_bytes(tmp_path / "probe")
    metrics = Metrics()
    cache = SegmentationCache(tmp_path / "bounded", max_bytes=entry * 10, metrics=metrics)
    for number in range(11):
        cache.put(key(number), FINGERPRINT, sample(number))
    root = tmp_path / "bounded"
    assert metrics.count("cache_bound", "scans") == 2  # start-up, and the eleventh write
    assert folder_bytes(root) <= entry * 10 * 0.9 + entry  # down to the low-water mark
    assert recorded_total(root) == folder_bytes(root)
    scans = metrics.count("cache_bound", "scans")
    cache.put(key(100), FINGERPRINT, sample(100))
    assert metrics.count("cache_bound", "scans") == scans


def test_the_total_is_reconciled_at_start_up(tmp_path: Path) -> None:
    cache = SegmentationCache(tmp_path, max_bytes=10**9)
    for number in range(3):
        cache.put(key(number), FINGERPRINT, sample(number))
    for path in (tmp_path / FINGERPRINT).glob("*/*"):  # removed by hand: the total drifted
        path.unlink()
    assert recorded_total(tmp_path) > 0
    SegmentationCache(tmp_path, max_bytes=10**9)
    assert recorded_total(tmp_path) == 0


_WRITER = """
import sys
import numpy as np
from pathlib import Path
from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache
root, first, count, bound = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cache = SegmentationCache(root, max_bytes=bound)
for number in range(first, first + count):
    rng = np.random.default_rng(number)
    cache.put(f"{number:064x}", "0123456789ab",
              CachedSegmentation(label_map=rng.integers(0, 2**31 - 1, (40, 40)).astype(np.int32), scores={0: 0.5}))
"""


def test_two_processes_sharing_the_folder_keep_one_bound(tmp_path: Path) -> None:
    probe = SegmentationCache(tmp_path / "probe")
    probe.put(key(0), FINGERPRINT, sample(0))
    entry = folder_bytes(tmp_path / "probe")
    root, bound = tmp_path / "shared", entry * 20
    SegmentationCache(root, max_bytes=bound)
    # Two writers at once, 15 entries each: each stays under the bound alone, together they pass it.
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), str(first), "15", str(bound)], cwd=REPO_ROOT
        )
        for first in (1000, 2000)
    ]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    assert folder_bytes(root) <= bound
    assert recorded_total(root) == folder_bytes(root)
    assert 15 * entry * 1.1 < bound  # each process's own writes: only a shared total sees both
