"""Segmentation overlays for people: each segment tinted with its own colour and outlined."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Successive hues step by the golden ratio of a turn, so neighbouring label values get far-apart colours.
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


class OverlayError(ValueError):
    """An image or label map that cannot be overlaid, or a PNG that could not be written."""


def segment_colour(value: int) -> tuple[int, int, int]:
    """The RGB colour of label ``value``: deterministic, saturated, and far from its neighbours' hues."""
    hue = (int(value) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    hsv = np.array([[[round(hue * 179), 200, 240]]], dtype=np.uint8)  # OpenCV's 8-bit hue spans 0-179
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def overlay_image(image: np.ndarray, label_map: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """uint8 HxWx3 RGB: ``image`` with every segment of ``label_map`` tinted (weight ``alpha``) and outlined.

    ``image`` is HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA, alpha ignored) uint8; ``label_map`` an integer
    HxW array of the same height and width. Outlines (1 px, inner side of each segment's boundary,
    holes included) are drawn in the segment's colour at full strength.
    """
    rgb = _as_rgb(image)
    label_map = np.asarray(label_map)
    if label_map.shape != rgb.shape[:2] or not np.issubdtype(label_map.dtype, np.integer):
        raise OverlayError(
            f"label map must be an integer array of shape {rgb.shape[:2]}, "
            f"got {label_map.dtype} {label_map.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise OverlayError(f"alpha must be within [0, 1], got {alpha}")
    values = np.unique(label_map)
    palette = np.array([segment_colour(v) for v in values], dtype=np.float32)
    tint = palette[np.searchsorted(values, label_map)]
    out = np.round((1.0 - alpha) * rgb.astype(np.float32) + alpha * tint).astype(np.uint8)
    for value, colour in zip(values, palette, strict=True):
        contours, _ = cv2.findContours(
            (label_map == value).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness=1)
    return out


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 HxWx3 RGB array as a PNG file at ``path`` (whatever its extension)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise OverlayError(f"write_png needs a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR
    if not ok:
        raise OverlayError(f"OpenCV could not encode a {rgb.shape} image as PNG for {path}")
    try:
        Path(path).write_bytes(encoded.tobytes())
    except OSError as error:
        raise OverlayError(f"could not write PNG {path}: {error.strerror or error}") from error


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise OverlayError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise OverlayError(f"image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
