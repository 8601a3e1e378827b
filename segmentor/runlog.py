"""Counters and stage timings of one segmentation, counting only the work that produced the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

COUNTERS = ("unet_sample_passes", "vae_decodes", "vae_encodes")


class RunLog:
    """Seconds per stage and network calls of one segmentation.

    Work that is thrown away (a chunk that ran out of memory and is redone smaller) happens inside
    ``attempt()`` and leaves no trace, so the figures describe the calls the result was made from.
    """

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._device.type == "cuda":
                # Kernels run asynchronously: without this the time would land in whichever stage waits next.
                torch.cuda.synchronize(self._device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Counts and times made inside are kept only if the block completes."""
        timings, counters = dict(self.timings), dict(self.counters)
        try:
            yield
        except BaseException:
            self.timings, self.counters = timings, counters
            raise

    def finish(self) -> tuple[dict[str, float], dict[str, int]]:
        """(timings with the wall-clock "total", counters), as copies."""
        return {**self.timings, "total": time.perf_counter() - self._started}, dict(self.counters)
