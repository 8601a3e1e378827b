"""Scenes as model tensors and back: images in [-1, 1], NCHW, float32."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from segmentor.toy.scenes import generate_scene

# Training draws scene seeds from this value upwards, so every seed below it is a held-out scene.
TRAIN_SEED_BASE = 1_000_000


def scene_batch(seeds: Iterable[int], size: int) -> torch.Tensor:
    images = np.stack([generate_scene(seed, size).image for seed in seeds])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8_images(batch: torch.Tensor) -> np.ndarray:
    """N×3×H×W in [-1, 1] to N×H×W×3 uint8 RGB."""
    pixels = ((batch.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


class SceneStream:
    """An endless supply of fresh training scenes; ``seed`` picks a disjoint block of scene seeds."""

    def __init__(self, seed: int, size: int) -> None:
        self.next_seed = TRAIN_SEED_BASE * (seed + 1)
        self.size = size

    def next_batch(self, count: int) -> torch.Tensor:
        seeds = range(self.next_seed, self.next_seed + count)
        self.next_seed += count
        return scene_batch(seeds, self.size)
