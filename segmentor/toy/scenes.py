"""Seeded synthetic scenes with exact ground truth: textured shapes on textured or gradient backgrounds.

Every random choice comes from ``numpy.random.default_rng(seed)``, so a seed always gives the same scene.
Shapes sit at sub-pixel positions (OpenCV's fixed-point ``shift``), so their edges do not line up with the
coarse feature grid of the models. The image is drawn anti-aliased; the maps are hard and show only what
is visible (later objects occlude earlier ones).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "disc", "box", "triangle", "ring", "ellipse")
# The colour variant (label learning's check, segmentor.evaluation.labels): same shapes, but an object's
# class is its colour family, which the bundled model's features do encode (its shapes they barely do).
COLOUR_CLASS_NAMES: tuple[str, ...] = ("background", "red", "green", "blue")
_COLOUR_CENTRES = {1: (210.0, 50.0, 50.0), 2: (50.0, 190.0, 60.0), 3: (50.0, 70.0, 210.0)}
_COLOUR_SPREAD = 45.0  # each channel within +-this of its class centre

MIN_SIZE = 16
_SHIFT = 4  # OpenCV fixed-point bits: coordinates in 1/16 pixel
_SCALE = 1 << _SHIFT
_MIN_VISIBLE_FRACTION = 0.4  # an object hidden more than this by later ones is redrawn elsewhere
_PLACEMENT_TRIES = 20


class SceneError(ValueError):
    """A scene request that cannot be met (bad size, count or folder)."""


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 H×W×3, RGB
    instance_map: np.ndarray  # int32 H×W, 0 = background, 1..n objects in drawing order
    class_map: np.ndarray  # int32 H×W, index into class_names, 0 = background
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def instance_classes(self) -> dict[int, int]:
        """Class id of every instance id present in the instance map."""
        ids = np.unique(self.instance_map)
        return {int(i): int(self.class_map[self.instance_map == i][0]) for i in ids if i != 0}


def generate_scene(seed: int, size: int = 64, classes: str = "shape") -> Scene:
    """Draw one scene of ``size``×``size`` pixels holding 2-5 visible objects.

    ``classes="shape"``: an object's class is its shape (:data:`CLASS_NAMES`); ``"colour"``: its colour
    family (:data:`COLOUR_CLASS_NAMES`), shapes still random. A shape scene is the same for a seed
    whether or not the colour variant exists (its random draws are unchanged).
    """
    if classes not in ("shape", "colour"):
        raise SceneError(f"scene classes must be 'shape' or 'colour', got {classes!r}")
    if size < MIN_SIZE:
        raise SceneError(f"scene size must be at least {MIN_SIZE} pixels, got {size}")
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    instance_map = np.zeros((size, size), np.int32)
    class_map = np.zeros((size, size), np.int32)
    count = int(rng.integers(2, 6))
    for instance in range(1, count + 1):
        class_id, hard, soft = _place_shape(rng, size, instance_map)
        if classes == "colour":
            class_id = int(rng.integers(1, len(COLOUR_CLASS_NAMES)))
            colour = _class_colour(rng, class_id, image[hard].mean(axis=0))
        else:
            colour = _distinct_colour(rng, image[hard].mean(axis=0))
        texture = _texture(rng, size, colour)
        alpha = soft[..., None]
        image = image * (1.0 - alpha) + texture * alpha
        instance_map[hard] = instance
        class_map[hard] = class_id
    image = image + rng.normal(0.0, 3.0, image.shape)  # sensor-like grain so no region is perfectly flat
    names = COLOUR_CLASS_NAMES if classes == "colour" else CLASS_NAMES
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), _consecutive(instance_map), class_map, names)


def write_scenes(out_dir: Path, count: int, seed: int, size: int = 64) -> list[Path]:
    """Write scenes ``seed .. seed+count-1`` as ``out_dir/<stem>.png`` with ground truth beside them.

    Class maps go to ``out_dir/gt/<stem>.png`` and instance maps to ``out_dir/gt_instances/<stem>.png``
    (uint8 PNGs, same stems as the images); ``out_dir/classes.json`` names the class ids.
    Returns the image paths.
    """
    if count < 1:
        raise SceneError(f"scene count must be at least 1, got {count}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SceneError(f"scene output {out_dir} exists and is not a folder")
    class_dir, instance_dir = out_dir / "gt", out_dir / "gt_instances"
    class_dir.mkdir(parents=True, exist_ok=True)
    instance_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for scene_seed in range(seed, seed + count):
        scene = generate_scene(scene_seed, size)
        stem = f"scene_{scene_seed:07d}"
        path = out_dir / f"{stem}.png"
        cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(class_dir / f"{stem}.png"), scene.class_map.astype(np.uint8))
        cv2.imwrite(str(instance_dir / f"{stem}.png"), scene.instance_map.astype(np.uint8))
        paths.append(path)
    (out_dir / "classes.json").write_text(json.dumps(dict(enumerate(CLASS_NAMES)), indent=2) + "\n")
    return paths


def _consecutive(instance_map: np.ndarray) -> np.ndarray:
    """Renumber visible instances 1..n in drawing order (a crowded scene can hide an object entirely)."""
    lookup = np.zeros(instance_map.max() + 1, np.int32)
    visible = np.unique(instance_map[instance_map > 0])
    lookup[visible] = np.arange(1, len(visible) + 1)
    return lookup[instance_map]


def _place_shape(rng: np.random.Generator, size: int, instance_map: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Pick a shape and a spot that leaves every earlier object mostly visible; returns class, hard and soft masks."""
    areas_before = np.bincount(instance_map.ravel())
    for _ in range(_PLACEMENT_TRIES):
        class_id = int(rng.integers(1, len(CLASS_NAMES)))
        hard, soft = _draw_mask(rng, size, _SHAPE_DRAWERS[CLASS_NAMES[class_id]])
        if hard.sum() < 0.01 * size * size:
            continue
        areas_after = np.bincount(instance_map[~hard].ravel(), minlength=len(areas_before))
        if np.all(areas_after[1:] >= _MIN_VISIBLE_FRACTION * areas_before[1:]):
            return class_id, hard, soft
    return class_id, hard, soft  # crowded scene: accept the last try; the maps still show what is visible


def _draw_mask(rng: np.random.Generator, size: int, drawer: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Draw one shape twice with the same geometry: hard (LINE_8, for the maps) and anti-aliased (for the image)."""
    centre = rng.uniform(0.15 * size, 0.85 * size, 2)
    radius = rng.uniform(0.1 * size, 0.25 * size)
    angle = rng.uniform(0.0, 180.0)
    geometry = drawer(rng, centre, radius, angle)
    hard = np.zeros((size, size), np.uint8)
    soft = np.zeros((size, size), np.uint8)
    geometry(hard, cv2.LINE_8)
    geometry(soft, cv2.LINE_AA)
    return hard > 0, soft.astype(np.float64) / 255.0


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _SCALE).astype(np.int32)


def _disc(rng: np.random.Generator, centre: np.ndarray, radius: float, angle: float) -> Callable:
    return lambda canvas, line: cv2.circle(canvas, tuple(_fixed(centre)), int(radius * _SCALE), 255, -1, line, _SHIFT)


def _ring(rng: np.random.Generator, centre: np.ndarray, radius: float, angle: float) -> Callable:
    thickness = max(2, int(radius * rng.uniform(0.3, 0.5)))
    mid_radius = int((radius - thickness / 2) * _SCALE)
    return lambda canvas, line: cv2.circle(canvas, tuple(_fixed(centre)), mid_radius, 255, thickness, line, _SHIFT)


def _ellipse(rng: np.random.Generator, centre: np.ndarray, radius: float, angle: float) -> Callable:
    axes = _fixed([radius, radius * rng.uniform(0.35, 0.65)])
    return lambda canvas, line: cv2.ellipse(canvas, tuple(_fixed(centre)), tuple(axes), angle, 0, 360, 255, -1,
                                            line, _SHIFT)


def _box(rng: np.random.Generator, centre: np.ndarray, radius: float, angle: float) -> Callable:
    sides = (2 * radius * rng.uniform(0.6, 1.0), 2 * radius * rng.uniform(0.6, 1.0))
    corners = cv2.boxPoints(((float(centre[0]), float(centre[1])), sides, angle))
    return _polygon(corners)


def _triangle(rng: np.random.Generator, centre: np.ndarray, radius: float, angle: float) -> Callable:
    turns = np.deg2rad(angle) + np.array([0.0, 2.0, 4.0]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    corners = centre + radius * np.stack([np.cos(turns), np.sin(turns)], axis=1)
    return _polygon(corners)


def _polygon(corners: np.ndarray) -> Callable:
    points = _fixed(corners)[None]
    return lambda canvas, line: cv2.fillPoly(canvas, points, 255, line, _SHIFT)


_SHAPE_DRAWERS: dict[str, Callable] = {
    "disc": _disc, "box": _box, "triangle": _triangle, "ring": _ring, "ellipse": _ellipse,
}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two colours, or smooth low-frequency noise, as float RGB."""
    first, second = rng.uniform(0, 255, (2, 3))
    if rng.random() < 0.5:
        direction = rng.normal(size=2)
        ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
        ramp = xs * direction[0] + ys * direction[1]
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    else:
        cells = int(rng.integers(3, 7))
        ramp = cv2.resize(rng.random((cells, cells)), (size, size), interpolation=cv2.INTER_CUBIC)
        ramp = np.clip(ramp, 0.0, 1.0)
    return first + (second - first) * ramp[..., None]


def _distinct_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A colour far enough from what it is drawn over that the object stays visible."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(_PLACEMENT_TRIES):
        if np.linalg.norm(colour - behind) > 90:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def _class_colour(rng: np.random.Generator, class_id: int, behind: np.ndarray) -> np.ndarray:
    """A colour of the class's family, far enough from what it is drawn over when the family allows."""
    centre = np.array(_COLOUR_CENTRES[class_id])
    colour = np.clip(centre + rng.uniform(-_COLOUR_SPREAD, _COLOUR_SPREAD, 3), 0, 255)
    for _ in range(_PLACEMENT_TRIES):
        if np.linalg.norm(colour - behind) > 90:
            break
        colour = np.clip(centre + rng.uniform(-_COLOUR_SPREAD, _COLOUR_SPREAD, 3), 0, 255)
    return colour


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """Flat colour, stripes, or blotches around ``colour``, as a full float RGB canvas."""
    kind = rng.integers(0, 3)
    if kind == 0:
        pattern = np.zeros((size, size))
    elif kind == 1:
        period = rng.uniform(4.0, 10.0)
        theta = rng.uniform(0.0, np.pi)
        ys, xs = np.mgrid[0:size, 0:size]
        pattern = np.sin(2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
    else:
        pattern = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)), (0, 0), 1.5)
        pattern /= max(np.abs(pattern).max(), 1e-6)
    contrast = rng.uniform(0.15, 0.35)
    return colour * (1.0 + contrast * pattern[..., None])
