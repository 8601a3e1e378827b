"""How many runs go through one network call: a memory budget that halves on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

Item = TypeVar("Item")


class OutOfMemoryError(RuntimeError):
    """Even the smallest chunk does not fit: nothing left to halve."""


class BatchBudget:
    """The largest chunk tried next; a multiple of ``step`` so paired runs never straddle two chunks."""

    def __init__(self, size: int, *, step: int = 1, what: str = "runs") -> None:
        self.size = max(step, size)
        self.step = step
        self.what = what

    def chunk(self, total: int) -> int:
        return max(self.step, min(total, self.size) // self.step * self.step)

    def chunks(self, total: int) -> list[int]:
        """The chunk sizes ``total`` items go through in, at the current budget."""
        size = self.chunk(total)
        return [min(size, total - start) for start in range(0, total, size)]

    def shrink(self) -> None:
        if self.size <= self.step:
            raise OutOfMemoryError(f"out of GPU memory even with {self.step} {self.what} per call")
        self.size = max(self.step, self.size // 2 // self.step * self.step)


def run_in_chunks(items: Sequence[Item], budget: BatchBudget, work: Callable[[Sequence[Item]], None]) -> None:
    """Call ``work`` on consecutive chunks; a chunk that runs out of GPU memory is redone at half the size."""
    start = 0
    while start < len(items):
        chunk = items[start:start + budget.chunk(len(items))]
        try:
            work(chunk)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        else:
            out_of_memory = False
            start += len(chunk)
        if out_of_memory:
            # Outside the except block: the exception's traceback no longer pins the failed chunk's tensors.
            budget.shrink()
            torch.cuda.empty_cache()
