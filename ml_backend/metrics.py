"""Process-wide counters served at GET /metrics (JSON). Thread-safe; reset only by a restart.

Groups: ``requests`` (per route), ``tasks`` (predicted / failed), ``failures`` (per reason, see
``ml_backend.errors``), ``cache`` (hits / misses), ``segmentor`` (segmentations and the network passes
they cost), ``seconds`` (wall time spent fetching, segmenting, making regions, and per /predict).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

GROUPS = ("requests", "tasks", "failures", "cache", "segmentor", "seconds")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, float]] = {group: defaultdict(int) for group in GROUPS}

    def increment(self, group: str, key: str, amount: float = 1) -> None:
        with self._lock:
            self._groups[group][key] += amount

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``seconds[key]``, also when it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.increment("seconds", key, time.perf_counter() - started)

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {group: dict(sorted(values.items())) for group, values in self._groups.items()}
