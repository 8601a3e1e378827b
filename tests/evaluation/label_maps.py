"""Hand-made label maps shared by the metric and score tests."""

from __future__ import annotations

import numpy as np


def halves(size: int = 10, left: int = 0, right: int = 1, split: int | None = None) -> np.ndarray:
    """Left columns ``left``, right columns ``right``; the edge sits before column ``split``."""
    labels = np.full((size, size), left, np.int64)
    labels[:, size // 2 if split is None else split:] = right
    return labels


def square(offset_x: int = 0) -> np.ndarray:
    """10x10 background 0 with a 4x4 square of id 1 at rows 2-5, columns 2-5 (shifted right by offset_x)."""
    labels = np.zeros((10, 10), np.int64)
    labels[2:6, 2 + offset_x:6 + offset_x] = 1
    return labels
