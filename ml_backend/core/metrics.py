"""Process-wide metrics: Prometheus' text format at GET /metrics (``prometheus_client``), plus a snapshot.

Every ``increment(group, name)`` is a counter ``emerdiff_<group>_total`` labelled with the name (the
known groups get clearer names and label keys, below); every ``timed(stage)`` block is observed in the
histogram ``emerdiff_stage_seconds{stage}``. The app adds request latency per route
(``emerdiff_request_seconds{route}``) and the prediction queue's depth and refusals. Each
:class:`Metrics` has its own registry, so several apps in one process (the tests) never collide.

``snapshot()`` gives the same counts as a dict of groups (``{"cache": {"hits": 2}, ...}``) for code
and tests in the process. Thread-safe; reset only by a restart.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# group -> (metric name, label key, help); other groups get emerdiff_<group>_total{name}.
_KNOWN_GROUPS = {
    "requests": ("emerdiff_requests_total", "route", "Requests per route."),
    "tasks": ("emerdiff_tasks_total", "outcome", "Tasks answered, by outcome (predicted / failed)."),
    "failures": ("emerdiff_task_errors_total", "reason", "Failed tasks by reason (see ml_backend.core.errors)."),
    "cache": ("emerdiff_cache_events_total", "event", "Segmentation cache hits, misses and evictions."),
    "segmentor": ("emerdiff_segmentor_total", "counter", "Segmentations and the network passes they cost."),
    "queue": ("emerdiff_queue_events_total", "event", "Prediction queue admissions and refusals."),
}
# Seconds: from a fast cache hit to Stable Diffusion on a CPU.
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        # The known groups show in the snapshot even while empty.
        self._groups.update({group: defaultdict(float) for group in (*_KNOWN_GROUPS, "seconds")})
        self._counters: dict[str, tuple[Counter, str]] = {}
        self._stage_seconds = Histogram(
            "emerdiff_stage_seconds",
            "Wall time of each stage: fetch, segment, regions, predict (one /predict request)...",
            ["stage"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "emerdiff_request_seconds",
            "Request latency per route, from the app's first to its last line.",
            ["route"],
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "emerdiff_predict_queue_depth",
            "/predict requests admitted and not finished (one at the model, the rest waiting).",
            registry=self.registry,
        )

    def increment(self, group: str, name: str, n: float = 1) -> None:
        with self._lock:
            self._groups[group][name] += n
            counter, _ = self._counter(group)
        counter.labels(name).inc(n)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Observe the wall time of the ``with`` block as stage ``name``, also when it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self._groups["seconds"][name] += seconds
            self._stage_seconds.labels(name).observe(seconds)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """The counts and summed seconds by group, for code and tests in this process."""
        with self._lock:
            return {group: dict(sorted(values.items())) for group, values in sorted(self._groups.items())}

    def count(self, group: str, name: str) -> float:
        with self._lock:
            return self._groups.get(group, {}).get(name, 0.0)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def _counter(self, group: str) -> tuple[Counter, str]:
        if group not in self._counters:
            name, label, help_text = _KNOWN_GROUPS.get(
                group, (f"emerdiff_{_NOT_NAME.sub('_', group)}_total", "name", f"Counts of {group}.")
            )
            # prometheus_client appends _total itself.
            counter = Counter(name.removesuffix("_total"), help_text, [label], registry=self.registry)
            self._counters[group] = (counter, label)
        return self._counters[group]
