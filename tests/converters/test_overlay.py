"""Overlays: shape and dtype, tinted segments, drawn outlines, and PNG files that read back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.overlay import OverlayError, overlay_image, segment_colour, write_png


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    label_map = np.zeros((40, 50), np.int64)
    label_map[5:25, 5:30] = 1
    label_map[20:38, 28:48] = 7
    return image, label_map


def test_overlay_is_rgb_uint8_of_the_image_size(scene) -> None:
    image, label_map = scene
    out = overlay_image(image, label_map)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    assert overlay_image(image[:, :, 0], label_map).shape == (40, 50, 3)


def test_segments_are_tinted_and_outlined_in_their_colour(scene) -> None:
    image, label_map = scene
    out = overlay_image(image, label_map, alpha=0.5)
    interior = np.zeros_like(label_map, bool)
    interior[10:20, 10:25] = True  # well inside segment 1
    expected = np.round(0.5 * image[interior] + 0.5 * np.array(segment_colour(1))).astype(np.uint8)
    assert np.abs(out[interior].astype(int) - expected).max() <= 1
    assert (out[interior] != image[interior]).any(axis=1).mean() > 0.9
    # Segment 1's top-left corner pixel lies on its contour: drawn in the full colour.
    assert tuple(out[5, 5]) == segment_colour(1)
    assert tuple(out[37, 47]) == segment_colour(7)


def test_colours_are_deterministic_and_distinct() -> None:
    colours = [segment_colour(v) for v in range(20)]
    assert colours == [segment_colour(v) for v in range(20)]
    assert len(set(colours)) == 20


def test_bad_inputs_are_named(scene) -> None:
    image, label_map = scene
    with pytest.raises(OverlayError, match="label map must be an integer array of shape"):
        overlay_image(image, label_map[:-1])
    with pytest.raises(OverlayError, match="image must be uint8"):
        overlay_image(image.astype(np.float32), label_map)
    with pytest.raises(OverlayError, match="alpha"):
        overlay_image(image, label_map, alpha=2.0)


def test_write_png_round_trips_through_cv2(scene, tmp_path: Path) -> None:
    out = overlay_image(*scene)
    path = tmp_path / "overlay.png"
    write_png(path, out)
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), out)


def test_write_png_failures_are_clear(scene, tmp_path: Path) -> None:
    out = overlay_image(*scene)
    with pytest.raises(OverlayError, match=r"could not write PNG .*no-such-dir"):
        write_png(tmp_path / "no-such-dir" / "x.png", out)
    with pytest.raises(OverlayError, match="uint8 HxWx3"):
        write_png(tmp_path / "x.png", out[:, :, 0])
