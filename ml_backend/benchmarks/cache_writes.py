"""The cost of one cache write in a folder that already holds many entries, against an older cache.py.

    python -m ml_backend.benchmarks.cache_writes --entries 10000 --writes 200 --baseline af190f0

Fills a temporary folder with ``--entries`` small entries, then times ``--writes`` more ``put`` calls
with this checkout's :class:`SegmentationCache` and with the ``cache.py`` of git revision ``--baseline``
(loaded from ``git show``), both under a CACHE_MAX_BYTES far above the folder (the common case: the
bound holds), in the same run. Prints milliseconds per write and the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache

REPO_ROOT = Path(__file__).resolve().parents[2]
FINGERPRINT = "0123456789ab"


def _baseline_module(revision: str, folder: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{revision}:ml_backend/segmentation/cache.py"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout
    path = folder / "baseline_cache.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_cache", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _entry(seed: int) -> CachedSegmentation:
    rng = np.random.default_rng(seed)
    return CachedSegmentation(label_map=rng.integers(0, 4, (16, 16)).astype(np.int32), scores={0: 0.5})


def _per_write_ms(cache: object, writes: int, first: int) -> float:
    started = time.perf_counter()
    for number in range(first, first + writes):
        cache.put(f"{number:064x}", FINGERPRINT, _entry(number))
    return (time.perf_counter() - started) * 1000 / writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--baseline", required=True, help="git revision whose cache.py is the baseline")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary) / "cache"
        filler = SegmentationCache(root)  # no bound: filling costs no scans
        for number in range(args.entries):
            filler.put(f"{number:064x}", FINGERPRINT, _entry(number))
        baseline = _baseline_module(args.baseline, Path(temporary))
        bound = 1024**4
        old = _per_write_ms(baseline.SegmentationCache(root, max_bytes=bound), args.writes, 10**9)
        new = _per_write_ms(SegmentationCache(root, max_bytes=bound), args.writes, 2 * 10**9)
    print(f"{args.entries} entries, {args.writes} writes each: baseline {args.baseline} {old:.2f} ms/write, "
          f"this checkout {new:.2f} ms/write, {old / new:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
