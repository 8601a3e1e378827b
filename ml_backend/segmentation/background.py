"""A bounded background job queue: one daemon worker thread runs the jobs one at a time, in order.

Work that must not hold a request open (a segmentation past /predict's time budget, a webhook's label
learning) goes here. The queue is bounded: ``submit`` answers ``False`` at once when ``capacity`` jobs
are waiting, and the caller decides what that means (503, an entry without a result). Jobs carry a key;
a key already waiting or running is not queued twice (the same image asked for by two requests is
segmented once). A job's exception is logged and counted, never kills the worker: the next job runs.

Metrics (group ``background``): ``<name>_queued``, ``<name>_deduplicated``, ``<name>_refused``,
``<name>_done``, ``<name>_failed``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from ml_backend.core.metrics import Metrics

logger = logging.getLogger(__name__)


class BackgroundQueue:
    def __init__(self, capacity: int, metrics: Metrics, name: str) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.name = name
        self._metrics = metrics
        self._condition = threading.Condition()
        # Waiting jobs in submission order, by key; the running job's key is kept apart.
        self._waiting: OrderedDict[Hashable, Callable[[], object]] = OrderedDict()
        self._running: Hashable | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"background-{name}", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, job: Callable[[], object]) -> bool:
        """Queue ``job`` under ``key``: True when queued (or the key already waits or runs), False when full."""
        with self._condition:
            if self._closed:
                self._count("refused")
                return False
            if key in self._waiting or (self._busy and self._running == key):
                self._count("deduplicated")
                return True
            if len(self._waiting) >= self.capacity:
                self._count("refused")
                return False
            self._waiting[key] = job
            self._count("queued")
            self._condition.notify_all()
            return True

    def pending(self) -> int:
        """Jobs waiting or running."""
        with self._condition:
            return len(self._waiting) + (1 if self._busy else 0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job waits or runs; False when ``timeout`` seconds pass first."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._waiting and not self._busy, timeout=timeout)

    def close(self) -> None:
        """Drop the waiting jobs and stop the worker after the running job (not waited for)."""
        with self._condition:
            self._closed = True
            self._waiting.clear()
            self._condition.notify_all()

    def _work(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._waiting or self._closed)
                if self._closed:
                    self._condition.notify_all()
                    return
                key, job = self._waiting.popitem(last=False)
                self._running, self._busy = key, True
            try:
                job()
                self._count("done")
            except Exception:  # one bad job never stops the queue
                logger.exception("background job %r in queue %s failed", key, self.name)
                self._count("failed")
            finally:
                with self._condition:
                    self._running, self._busy = None, False
                    self._condition.notify_all()

    def _count(self, event: str) -> None:
        self._metrics.increment("background", f"{self.name}_{event}")
