"""Images of any kind: decoded to RGB uint8 upright, segmented at any size, or refused clearly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from segmentor import ImageError, load_image
from tests.segmentor.conftest import scene_image


def _encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_grayscale_becomes_three_equal_channels():
    gray = Image.fromarray(np.arange(64 * 32, dtype=np.uint8).reshape(32, 64) % 251)
    rgb = load_image(_encoded(gray))
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 2]).all() and (rgb[..., 0] == np.asarray(gray)).all()


def test_rgba_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = [255, 0, 0, 255]  # opaque red
    rgba[4:] = [0, 0, 255, 0]  # fully transparent
    rgb = load_image(_encoded(Image.fromarray(rgba, "RGBA")))
    assert (rgb[:4] == [255, 0, 0]).all() and (rgb[4:] == [255, 255, 255]).all()


def test_sixteen_bit_is_rescaled_not_clipped():
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    rgb = load_image(_encoded(Image.fromarray(values)))
    assert rgb[0, 0, 0] == 0 and rgb[0, 1, 0] == 255 and 126 <= rgb[1, 0, 0] <= 129


def test_exif_orientation_is_applied():
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    upright = load_image(_encoded(Image.fromarray(wide), "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50


@pytest.mark.parametrize(("payload", "message"), [
    (b"definitely not an image", "not an image file"),
    (_encoded(Image.new("RGB", (64, 64)))[:60], "corrupt or truncated"),
])
def test_bad_bytes_are_refused_clearly(payload, message):
    with pytest.raises(ImageError, match=message):
        load_image(payload)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_pixel_cap_is_enforced_before_decoding():
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(_encoded(Image.new("RGB", (200, 100))), max_pixels=10_000)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (17, 300), (300, 17), (37, 53)])
def test_odd_sizes_segment_at_their_original_size(tiny_segmentor, shape):
    image = scene_image(1, 64, 64)
    import cv2

    resized = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    result = tiny_segmentor.segment(resized)
    assert result.label_map.shape == shape
    assert sum(s.area for s in result.segments) == shape[0] * shape[1]


@pytest.mark.slow
def test_large_image_keeps_its_size_and_working_size_stays_native(tiny_segmentor):
    image = np.repeat(np.repeat(scene_image(2, 64, 96), 25, axis=0), 25, axis=1)  # 1600 x 2400
    assert tiny_segmentor.working_shape(*image.shape[:2]) == (48, 64)
    result = tiny_segmentor.segment(image)
    assert result.label_map.shape == (1600, 2400)


def test_working_shape_is_a_multiple_of_the_model_grid(tiny_segmentor):
    # The long side is exactly the native 64; the short side the nearest multiple of 16 (at least 16).
    expected = {(480, 640): (48, 64), (1000, 10): (64, 16), (64, 64): (64, 64), (3, 4000): (16, 64),
                (100, 70): (64, 48), (2000, 1000): (64, 32)}
    for (height, width), shape in expected.items():
        assert tiny_segmentor.working_shape(height, width) == shape, (height, width)


def test_segment_refuses_arrays_that_are_not_rgb8(tiny_segmentor):
    with pytest.raises(ImageError, match=r"uint8 \(H, W, 3\)"):
        tiny_segmentor.segment(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ImageError, match="float32"):
        tiny_segmentor.segment(np.zeros((8, 8, 3), dtype=np.float32))
