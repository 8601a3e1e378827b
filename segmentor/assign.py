"""From per-mask response maps to a label map at the original size (steps 9-10 of the method)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def difference_maps(plus: torch.Tensor, minus: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 norm over RGB of I+ - I-: (n, 3, H, W) pairs -> (n, H, W) in float32.

    Decoded images are clamped to [-1, 1] first, as any pipeline does before showing them: what differs
    outside that range is not a difference of images.
    """
    return torch.linalg.vector_norm(plus.float().clamp(-1, 1) - minus.float().clamp(-1, 1), dim=1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, H, W) maps with reflected borders; sigma in pixels."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=maps.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    x = maps[:, None]
    # Reflect padding needs the pad smaller than the side; tiny working images fall back to replicate.
    mode = "reflect" if radius < min(x.shape[-2:]) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def assign_labels(
    maps: np.ndarray | torch.Tensor, size: tuple[int, int], exclude: frozenset[int] = frozenset()
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinearly resize each map to ``size`` and give every pixel to the strongest one.

    Maps are resized one at a time with a running top-2, so memory stays O(H*W) for any number of
    maps. Returns the label map (int64) and the normalised margin (top1 - top2) / top1 per pixel.
    ``exclude`` lists map indices that may never win.
    """
    maps = torch.as_tensor(maps)
    height, width = size
    best = torch.full((height, width), -math.inf, device=maps.device)
    second = torch.full_like(best, -math.inf)
    labels = torch.zeros((height, width), dtype=torch.int64, device=maps.device)
    for index in range(maps.shape[0]):
        if index in exclude:
            continue
        resized = F.interpolate(maps[index][None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
        wins = resized > best
        second = torch.where(wins, best, torch.maximum(second, resized))
        best = torch.where(wins, resized, best)
        labels = torch.where(wins, torch.tensor(index, device=maps.device), labels)
    finite_second = torch.where(torch.isfinite(second), second, torch.zeros_like(second))
    margin = torch.where(best > 0, (best - finite_second) / best.clamp_min(1e-12), torch.zeros_like(best))
    return labels.cpu().numpy(), margin.clamp(0, 1).cpu().numpy()


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
