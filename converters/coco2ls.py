"""A COCO dataset → Label Studio tasks whose predictions hold its annotations (import them, then accept).

Each COCO annotation becomes one region of the control that holds its category's name:
- a box only (no segmentation), or a one-ring polygon that is a rectangle, → ``rectanglelabels``
  (rotation kept) when a RectangleLabels control holds the label;
- another one-ring polygon → ``polygonlabels``;
- RLE or several rings → ``brushlabels`` (exact), or ``polygonlabels`` when no BrushLabels control holds
  the label and the mask is one piece without holes.
Anything else is refused with the annotation's id. Region scores are the annotations' ``score``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import numpy as np

from converters.coco import CocoError, decode_rle, has_holes
from converters.label_config import ControlTag, parse_label_config
from converters.labelstudio import (
    BRUSH,
    MASK_TYPES,
    MAX_PIXELS,
    POLYGON,
    RECTANGLE,
    InvalidRegionError,
    brush_region,
    polygon_regions,
    rectangle_region,
)
from converters.polygons import mask_to_polygons, polygons_to_mask
from converters.values import is_finite_number as _is_finite
from converters.values import is_id
from converters.values import is_int as _is_int

DEFAULT_IMAGE_PREFIX = "/data/local-files/?d="
# Corners of a rectangle meet at right angles: |cos| of each corner's angle below this.
_RIGHT_ANGLE_COS = 1e-3


class CocoFormatError(ValueError):
    """A COCO file that cannot become Label Studio tasks; the message names the entry."""


def coco_to_label_studio_tasks(
    dataset: Any,
    label_config: str,
    *,
    image_prefix: str = DEFAULT_IMAGE_PREFIX,
    model_version: str = "coco",
) -> list[dict]:
    """One task per COCO image (``data`` = ``image_prefix`` + quoted ``file_name``), in image order, with
    one prediction of ``model_version`` holding the image's annotations as regions."""
    controls = [c for c in parse_label_config(label_config) if c.result_type in MASK_TYPES]
    if not controls:
        raise CocoFormatError("label config has no PolygonLabels, BrushLabels or RectangleLabels control")
    data_key = controls[0].data_key or "image"
    by_label: dict[str, dict[str, ControlTag]] = {}
    for control in controls:
        for label in control.labels:
            by_label.setdefault(label, {}).setdefault(control.result_type, control)
    images, categories, annotations = _read(dataset)
    per_image: dict[int, list[dict]] = {image_id: [] for image_id in images}
    for annotation in annotations:
        image = images[annotation["image_id"]]
        name = categories[annotation["category_id"]]
        if name not in by_label:
            raise CocoFormatError(
                f"annotation {annotation['id']}: category {name!r} is a label of no PolygonLabels, BrushLabels "
                "or RectangleLabels control of the config"
            )
        try:
            per_image[image["id"]].append(_region(annotation, image, name, by_label[name]))
        except InvalidRegionError as error:
            raise CocoFormatError(f"annotation {annotation['id']}: {error}") from error
    tasks = []
    for image_id, image in images.items():
        regions = per_image[image_id]
        scores = [r["score"] for r in regions if "score" in r]
        prediction: dict[str, Any] = {"model_version": model_version, "result": regions}
        if scores:
            prediction["score"] = float(np.mean(scores))
        tasks.append(
            {"data": {data_key: image_prefix + quote(image["file_name"], safe="/")}, "predictions": [prediction]}
        )
    return tasks


def _read(dataset: Any) -> tuple[dict[int, dict], dict[int, str], list[dict]]:
    if not isinstance(dataset, dict):
        raise CocoFormatError(f"COCO file must be a JSON object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise CocoFormatError(f"COCO file has no '{key}' list")
    images = {}
    for image in dataset["images"]:
        if not (
            isinstance(image, dict)
            and _is_int(image.get("id"))
            and isinstance(image.get("file_name"), str)
            and _is_int(image.get("width"))
            and _is_int(image.get("height"))
            and 0 < image["width"] * image["height"] <= MAX_PIXELS
            and image["width"] > 0
        ):
            raise CocoFormatError(
                f"image {image!r:.120} needs an integer id, a file_name and a positive size of at most "
                f"{MAX_PIXELS} pixels"
            )
        images[image["id"]] = image
    categories = {}
    for category in dataset["categories"]:
        if not (isinstance(category, dict) and _is_int(category.get("id")) and isinstance(category.get("name"), str)):
            raise CocoFormatError(f"category {category!r:.120} needs an integer id and a name")
        categories[category["id"]] = category["name"]
    for annotation in dataset["annotations"]:
        if not isinstance(annotation, dict):
            raise CocoFormatError(f"annotation {annotation!r:.80} is not a JSON object")
        if not is_id(annotation.get("id")):
            raise CocoFormatError(f"annotation {annotation!r:.80}: 'id' must be an integer or a string")
        where = f"annotation {annotation.get('id')!r}"
        if not _is_int(annotation.get("image_id")) or annotation["image_id"] not in images:
            raise CocoFormatError(f"{where}: image_id {annotation.get('image_id')!r:.40} is not an image of the file")
        if not _is_int(annotation.get("category_id")) or annotation["category_id"] not in categories:
            raise CocoFormatError(f"{where}: category_id {annotation.get('category_id')!r} is not a category")
        if "score" in annotation and not _is_finite(annotation["score"]):
            raise CocoFormatError(f"{where}: score must be a number, got {annotation['score']!r:.40}")
    return images, categories, dataset["annotations"]


def _region(annotation: dict, image: dict, label: str, controls: dict[str, ControlTag]) -> dict:
    width, height = image["width"], image["height"]
    score = annotation.get("score")
    region_id = f"coco{annotation.get('id')}"
    segmentation = annotation.get("segmentation")
    rings = _rings(segmentation, region_id) if isinstance(segmentation, list) else None
    if not segmentation:
        corners = _box_corners(annotation.get("bbox"), region_id)
    else:
        corners = rings[0] if rings and len(rings) == 1 and _is_rectangle(rings[0]) else None
    if corners is not None and RECTANGLE in controls:
        return rectangle_region(
            corners,
            width=width,
            height=height,
            label=label,
            score=score,
            region_id=region_id,
            **_names(controls[RECTANGLE]),
        )
    if rings and len(rings) == 1 and POLYGON in controls:
        return _polygon(rings[0], image, label, controls[POLYGON], score, region_id)
    if not segmentation:
        raise InvalidRegionError(f"region {region_id!r}: a box needs a RectangleLabels control holding {label!r}")
    mask = polygons_to_mask(rings, height, width) if rings else _rle_mask(segmentation, width, height, region_id)
    if not mask.any():
        raise InvalidRegionError(f"region {region_id!r}: the segmentation covers no pixel")
    if BRUSH in controls:
        return brush_region(mask, label=label, score=score, region_id=region_id, **_names(controls[BRUSH]))
    polygons = mask_to_polygons(mask, min_area=0)
    if POLYGON in controls and len(polygons) == 1 and not has_holes(mask):
        return _polygon(polygons[0], image, label, controls[POLYGON], score, region_id)
    raise InvalidRegionError(
        f"region {region_id!r}: a mask with holes or several parts needs a BrushLabels control holding {label!r}"
    )


def _polygon(
    ring: np.ndarray, image: dict, label: str, control: ControlTag, score: float | None, region_id: str
) -> dict:
    (region,) = polygon_regions(
        [ring], width=image["width"], height=image["height"], label=label, score=score, **_names(control)
    )
    return region | {"id": region_id}


def _names(control: ControlTag) -> dict[str, str]:
    return {"from_name": control.name, "to_name": control.to_names[0]}


def _rings(segmentation: list, region_id: str) -> list[np.ndarray]:
    rings = []
    for ring in segmentation:
        if not (isinstance(ring, list) and len(ring) >= 6 and len(ring) % 2 == 0 and all(map(_is_finite, ring))):
            raise InvalidRegionError(f"region {region_id!r}: a polygon ring must be >= 3 (x, y) pairs of numbers")
        rings.append(np.asarray(ring, dtype=np.float64).reshape(-1, 2))
    return rings


def _box_corners(bbox: Any, region_id: str) -> np.ndarray:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox)) and min(bbox[2:]) > 0):
        raise InvalidRegionError(f"region {region_id!r}: no segmentation and no valid bbox [x, y, w, h]")
    x, y, w, h = bbox
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def _is_rectangle(ring: np.ndarray) -> bool:
    if len(ring) != 4:
        return False
    edges = np.roll(ring, -1, axis=0) - ring
    lengths = np.linalg.norm(edges, axis=1)
    if lengths.min() <= 1e-9:
        return False
    cosines = np.sum(edges * np.roll(edges, -1, axis=0), axis=1) / (lengths * np.roll(lengths, -1))
    # Label Studio turns clockwise on screen: the corners must run clockwise (positive area, y down).
    x, y = ring[:, 0], ring[:, 1]
    clockwise = float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0
    return bool(np.abs(cosines).max() < _RIGHT_ANGLE_COS) and clockwise


def _rle_mask(segmentation: Any, width: int, height: int, region_id: str) -> np.ndarray:
    try:
        return decode_rle(segmentation, width, height)
    except CocoError as error:
        raise InvalidRegionError(f"region {region_id!r}: {error}") from error
