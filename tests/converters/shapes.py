"""Hypothesis strategies of masks: ordinary shapes (ellipses, rotated rectangles, convex polygons) and
blobs, rendered with OpenCV at sub-pixel positions from drawn parameters. "Ordinary" means one convex
component of at least 40 px (it may be as thin as 4 px); blobs (thresholded smooth noise) are neither
convex nor single, and may hold holes and 1-px necks."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import strategies as st

HEIGHT, WIDTH = 96, 128
# cv2 drawing with 4 fractional bits places shapes at sub-pixel positions.
_SHIFT = 4


def _fixed(value: float) -> int:
    return round(value * (1 << _SHIFT))


@st.composite
def ellipses(draw: st.DrawFn) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    centre = (_fixed(draw(st.floats(30, WIDTH - 30))), _fixed(draw(st.floats(30, HEIGHT - 30))))
    axes = (_fixed(draw(st.floats(4, 28))), _fixed(draw(st.floats(4, 28))))
    cv2.ellipse(mask, centre, axes, draw(st.floats(0, 180)), 0, 360, 1, thickness=-1, shift=_SHIFT)
    return mask.astype(bool)


@st.composite
def rotated_rectangles(draw: st.DrawFn) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    centre = (draw(st.floats(35, WIDTH - 35)), draw(st.floats(35, HEIGHT - 35)))
    size = (draw(st.floats(6, 45)), draw(st.floats(6, 45)))
    corners = cv2.boxPoints((centre, size, draw(st.floats(0, 90))))
    cv2.fillPoly(mask, [np.round(corners * (1 << _SHIFT)).astype(np.int32)], 1, shift=_SHIFT)
    return mask.astype(bool)


@st.composite
def convex_polygons(draw: st.DrawFn) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    radius = draw(st.floats(6, 40))
    centre = np.array([WIDTH / 2, HEIGHT / 2]) + rng.uniform(-15, 15, size=2)
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=draw(st.integers(3, 9))))
    points = centre + radius * np.stack([np.cos(angles), np.sin(angles) * 0.9], axis=1)
    hull = cv2.convexHull(np.round(points * (1 << _SHIFT)).astype(np.int32))
    cv2.fillPoly(mask, [hull], 1, shift=_SHIFT)
    return mask.astype(bool)


def ordinary_shapes() -> st.SearchStrategy[np.ndarray]:
    return st.one_of(ellipses(), rotated_rectangles(), convex_polygons()).filter(
        lambda mask: mask.sum() >= 40
    )


@st.composite
def blobs(draw: st.DrawFn) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    noise = cv2.resize(
        rng.normal(size=(HEIGHT // 8, WIDTH // 8)), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC
    )
    smooth = cv2.GaussianBlur(noise, (0, 0), draw(st.floats(1.0, 5.0)))
    return smooth > np.quantile(smooth, draw(st.floats(0.5, 0.9)))


@st.composite
def label_maps(draw: st.DrawFn) -> np.ndarray:
    """Voronoi partitions of random seed points, segment values 0..n-1 (some may lose every pixel)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    seeds = rng.uniform([0, 0], [WIDTH, HEIGHT], size=(draw(st.integers(2, 8)), 2))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    distances = (xs[..., None] - seeds[:, 0]) ** 2 + (ys[..., None] - seeds[:, 1]) ** 2
    return distances.argmin(axis=2).astype(np.int32)


def filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of its outer contours filled (what a polygon can represent)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
