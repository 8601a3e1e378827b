"""A cache write killed part-way (issue 18) never leaves an entry that reads as corrupt.

A real writer process is killed (``os._exit``, as a SIGKILL would: no cleanup runs) at the moment it is
about to move its arrays, or its record, into place: an audit hook on ``os.rename`` (which ``os.replace``
raises) picks the moment, so the code under test runs unchanged. Afterwards the entry must read as absent
or as a whole segmentation, never as a corrupt one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml_backend.core.metrics import Metrics
from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache

KEY, FINGERPRINT = "ab" * 32, "cd" * 8
ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import os, sys
from pathlib import Path
import numpy as np
from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache

root, value, kill_before = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cache = SegmentationCache(root)
segmentation = CachedSegmentation(label_map=np.full((6, 9), value, np.int32), scores={value: value / 10})
moves = 0

def hook(event, args):
    global moves
    if event == "os.rename" and str(args[1]).endswith((".npz", ".json")):
        moves += 1
        if moves == kill_before:
            os._exit(9)

sys.addaudithook(hook)
cache.put(sys.argv[4], sys.argv[5], segmentation)
"""


def killed_write(root: Path, value: int, kill_before: int) -> int:
    """Put a segmentation of ``value``s in a fresh process, killed before its ``kill_before``-th move."""
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(root), str(value), str(kill_before), KEY, FINGERPRINT],
        cwd=ROOT, capture_output=True, check=False, timeout=120,
    ).returncode


def write(root: Path, value: int) -> None:
    segmentation = CachedSegmentation(label_map=np.full((6, 9), value, np.int32), scores={value: value / 10})
    SegmentationCache(root).put(KEY, FINGERPRINT, segmentation)


def read(root: Path) -> tuple[CachedSegmentation | None, float]:
    metrics = Metrics()
    entry = SegmentationCache(root, metrics=metrics).get(KEY, FINGERPRINT)
    return entry, metrics.count("cache", "corrupt")


# Each case starts a Python that imports the backend (torch included): seconds, not milliseconds.
@pytest.mark.slow
@pytest.mark.parametrize("kill_before", [1, 2])
def test_a_first_write_killed_part_way_leaves_no_entry(tmp_path: Path, kill_before: int) -> None:
    assert killed_write(tmp_path, 3, kill_before) == 9
    assert read(tmp_path) == (None, 0)
    write(tmp_path, 3)  # and the next write completes the entry
    entry, corrupt = read(tmp_path)
    assert corrupt == 0 and (entry.label_map == 3).all() and entry.scores == {3: 0.3}


@pytest.mark.slow
@pytest.mark.parametrize("kill_before", [1, 2])
def test_a_rewrite_killed_part_way_leaves_the_old_entry_or_none_never_a_corrupt_one(
    tmp_path: Path, kill_before: int
) -> None:
    write(tmp_path, 3)
    assert killed_write(tmp_path, 5, kill_before) == 9
    entry, corrupt = read(tmp_path)
    assert corrupt == 0
    assert entry is None or ((entry.label_map == 3).all() and entry.scores == {3: 0.3})
