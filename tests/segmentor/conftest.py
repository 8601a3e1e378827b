from __future__ import annotations

import numpy as np
import pytest

from segmentor import EmerDiffConfig, EmerDiffSegmentor, load_model


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_segmentor(tiny_model) -> EmerDiffSegmentor:
    return EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5))


def scene_image(seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth background with two flat shapes: enough structure for k-means to find regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / width, yy * 255 / height, np.full_like(xx, 90.0)], axis=-1)
    image += rng.normal(0, 8, image.shape)
    image[height // 5: height // 2, width // 4: width * 3 // 4] = rng.integers(0, 255, 3)
    cy, cx = int(height * 0.7), int(width * 0.4)
    image[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) // 6) ** 2] = rng.integers(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)
