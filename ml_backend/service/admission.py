"""A bounded queue in front of the model: /predict requests beyond it are refused, not parked.

Every request holds one of gunicorn's threads until it is answered. Predictions run one at a time (one
model per process), so without a bound the threads fill with predictions waiting for the model and
/health, /metrics and /setup wait behind them: Docker's healthcheck then marks a busy backend dead. The
queue admits at most PREDICT_QUEUE_SIZE /predict requests at once (the running one included), which
leaves the other threads to everything else; a request beyond that is answered 503 with Retry-After at
once, and Label Studio asks again later.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ml_backend.core.metrics import Metrics


class QueueFullError(RuntimeError):
    """The prediction queue is full; answered 503 with ``retry_after`` seconds."""

    def __init__(self, capacity: int, retry_after: int) -> None:
        super().__init__(
            f"busy: {capacity} prediction request(s) already admitted (PREDICT_QUEUE_SIZE={capacity}); "
            f"retry in {retry_after} s"
        )
        self.retry_after = retry_after


class PredictionQueue:
    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity = capacity
        self._metrics = metrics
        self._lock = threading.Lock()
        self._depth = 0

    @property
    def depth(self) -> int:
        return self._depth

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the ``with`` block; :class:`QueueFullError` at once when there is none."""
        with self._lock:
            if self._depth >= self.capacity:
                self._metrics.increment("queue", "refused")
                raise QueueFullError(self.capacity, self._retry_after())
            self._depth += 1
            self._metrics.queue_depth.set(self._depth)
        self._metrics.increment("queue", "admitted")
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                self._metrics.queue_depth.set(self._depth)

    def _retry_after(self) -> int:
        """About the time the queue ahead needs: mean /predict seconds times the requests admitted."""
        # Finished predictions only: the ones still in the queue have added no seconds yet.
        done = self._metrics.count("queue", "admitted") - self._depth
        mean = self._metrics.count("seconds", "predict") / done if done else 1.0
        return max(1, min(300, math.ceil(mean * self.capacity)))
