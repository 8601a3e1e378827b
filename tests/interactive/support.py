"""A hand-made segmentation whose every region is known exactly, and Label Studio-shaped prompts."""

from __future__ import annotations

import numpy as np

from ml_backend.segmentation.cache import CachedSegmentation

SIZE = 40
# Quadrants: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (20 x 20 pixels each).
QUADRANTS = np.block(
    [[np.full((20, 20), 0), np.full((20, 20), 1)], [np.full((20, 20), 2), np.full((20, 20), 3)]]
).astype(np.int32)
# Tree: 4 = {0, 1} (top half), 5 = {2, 3} (bottom half), 6 = everything.
MERGES = np.array([[0, 1], [2, 3], [4, 5]], np.int32)
SCORES = {0: 0.9, 1: 0.5, 2: 0.7, 3: 0.3}
# Percent coordinates of a point in the middle of each quadrant.
CENTRES = {0: (25.0, 25.0), 1: (75.0, 25.0), 2: (25.0, 75.0), 3: (75.0, 75.0)}

CONTROLS = """
  <KeyPointLabels name="point" toName="image" smart="true">
    <Label value="Cat" smart="true"/><Label value="Dog" smart="true"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Cat"/><Label value="Dog"/>
  </RectangleLabels>"""


def label_config(kind: str, attributes: str = "") -> str:
    """Upstream SAM examples' layout: an output control beside smart keypoint and rectangle tools."""
    tag, name = {"brush": ("BrushLabels", "paint"), "polygon": ("PolygonLabels", "outline")}[kind]
    return (
        f'<View><Image name="image" value="$image"/>'
        f'<{tag} name="{name}" toName="image"{attributes}><Label value="Cat"/><Label value="Dog"/></{tag}>'
        f"{CONTROLS}</View>"
    )


def quadrants(label_map: np.ndarray = QUADRANTS) -> CachedSegmentation:
    return CachedSegmentation(label_map=label_map, scores=dict(SCORES), merges=MERGES)


def keypoint(x: float, y: float, *, positive: bool = True, label: str = "Cat") -> dict:
    """A smart keypoint as Label Studio 1.23 serialises it (``is_positive`` false when drawn with Alt)."""
    return {
        "id": f"k{x}-{y}",
        "from_name": "point",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": SIZE,
        "original_height": SIZE,
        "image_rotation": 0,
        "origin": "manual",
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
    }


def rectangle(x: float, y: float, width: float, height: float, *, label: str = "Cat") -> dict:
    return {
        "id": f"r{x}-{y}",
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": SIZE,
        "original_height": SIZE,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": [label]},
    }


def at(segment: int, **options: object) -> dict:
    return keypoint(*CENTRES[segment], **options)
