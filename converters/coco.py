"""COCO instance-segmentation files that pycocotools loads and evaluates (``COCO``, ``COCOeval``).

Unlike Label Studio's own COCO export, ids start at 1 (an annotation id 0 breaks ``COCOeval``), brush
regions and predictions are exported too, ``file_name`` is the image's basename, and a mask with holes
is written as COCO RLE rather than as polygons that would fill them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from converters.label_config import parse_label_config
from converters.labelstudio import (
    BRUSH,
    POLYGON,
    InvalidRegionError,
    check_region,
    polygon_pixels,
    region_to_mask,
)
from converters.polygons import mask_to_polygons, polygons_to_mask

ENCODINGS = ("auto", "polygon", "rle")
# Decimals kept of a polygon coordinate in pixels.
_PIXEL_DECIMALS = 3


class CocoError(ValueError):
    """A call that would make an invalid COCO file (unknown image or category, empty or mis-sized mask)."""


class ExportFormatError(ValueError):
    """A Label Studio export that cannot be read; the message names the task and the region."""


class CocoBuilder:
    """Collects images and mask annotations; category ids follow ``categories`` from 1."""

    def __init__(self, categories: Sequence[str]) -> None:
        names = list(categories)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise CocoError(f"categories must be a non-empty list of names, got {names!r}")
        if len(set(names)) != len(names):
            raise CocoError(f"category names must be unique, got {names!r}")
        self._category_ids = {name: index for index, name in enumerate(names, start=1)}
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        """Register an image (``file_name`` reduced to its basename); returns its id (from 1)."""
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise CocoError(f"image {file_name!r}: size must be positive integers, got {width!r}x{height!r}")
        image_id = len(self._images) + 1
        self._images.append(
            {"id": image_id, "file_name": image_basename(file_name), "width": width, "height": height}
        )
        return image_id

    def add_mask(
        self,
        image_id: int,
        category: str,
        mask: np.ndarray,
        *,
        score: float | None = None,
        encoding: str = "auto",
    ) -> int:
        """Add one instance mask; returns its annotation id (from 1).

        ``encoding``: ``"polygon"`` (rings of :func:`converters.polygons.mask_to_polygons`, holes filled),
        ``"rle"`` (COCO RLE, exact) or ``"auto"`` (RLE when the mask has holes, polygons otherwise).
        ``area`` and ``bbox`` come from the mask's pixels either way.
        """
        if encoding not in ENCODINGS:
            raise CocoError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        image = self._image(image_id)
        mask = np.asarray(mask) != 0
        if mask.shape != (image["height"], image["width"]):
            raise CocoError(
                f"mask shape {mask.shape} does not match image {image_id} "
                f"({image['height']}x{image['width']})"
            )
        if encoding == "auto":
            encoding = "rle" if has_holes(mask) else "polygon"
        segmentation = _rle(mask) if encoding == "rle" else _polygon_rings(mask)
        return self._append(image_id, category, mask, segmentation, score)

    def _image(self, image_id: int) -> dict[str, Any]:
        if not (isinstance(image_id, int) and 1 <= image_id <= len(self._images)):
            raise CocoError(f"unknown image id {image_id!r} ({len(self._images)} images added)")
        return self._images[image_id - 1]

    def _append(
        self, image_id: int, category: str, mask: np.ndarray, segmentation: Any, score: float | None
    ) -> int:
        if category not in self._category_ids:
            raise CocoError(f"unknown category {category!r} (categories: {list(self._category_ids)})")
        area = int(mask.sum())
        if area == 0:
            raise CocoError(f"empty mask for image {image_id}, category {category!r}")
        annotation = {
            "id": len(self._annotations) + 1,
            "image_id": image_id,
            "category_id": self._category_ids[category],
            "segmentation": segmentation,
            "area": float(area),
            "bbox": [float(v) for v in cv2.boundingRect(mask.astype(np.uint8))],
            "iscrowd": 0,
        }
        if score is not None:
            annotation["score"] = float(score)
        self._annotations.append(annotation)
        return annotation["id"]

    def add_polygons(
        self, image_id: int, category: str, polygons: Sequence[np.ndarray], *, score: float | None = None
    ) -> int:
        """Add one instance given as rings of ``(x, y)`` pixel coordinates, kept as they are (lossless).

        ``area`` and ``bbox`` come from the rings rasterised as ``annToMask`` does.
        """
        image = self._image(image_id)
        mask = polygons_to_mask(polygons, image["height"], image["width"])
        rings = [
            np.round(np.asarray(p, dtype=np.float64), _PIXEL_DECIMALS).ravel().tolist() for p in polygons
        ]
        return self._append(image_id, category, mask, rings, score)

    def to_dict(self) -> dict:
        return {
            "info": {"description": "written by converters.coco (EmerDiff Label Studio backend)"},
            "licenses": [],
            "images": [dict(image) for image in self._images],
            "annotations": [dict(annotation) for annotation in self._annotations],
            "categories": [
                {"id": i, "name": name, "supercategory": ""} for name, i in self._category_ids.items()
            ],
        }

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")


def has_holes(mask: np.ndarray) -> bool:
    """True when filling the outer boundaries of ``mask`` adds pixels, i.e. polygons would lose something."""
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return bool((filled != binary).any())


def image_basename(file_name: str) -> str:
    """Basename of a path or Label Studio URL (``/data/local-files/?d=dir/a.png`` → ``a.png``)."""
    parts = urlsplit(file_name)
    local_file = parse_qs(parts.query).get("d")
    return PurePosixPath(local_file[0] if local_file else parts.path).name or file_name


def label_studio_export_to_coco(
    export: list[dict],
    label_config: str,
    *,
    predictions: bool = False,
    image_sizes: Mapping | None = None,
) -> dict:
    """COCO dict of the polygon and brush regions of a Label Studio JSON export.

    Reads each task's ``annotations`` (cancelled ones skipped) or, with ``predictions=True``, its
    ``predictions`` (region ``score``, else the prediction's ``score``, becomes the annotation's score).
    Categories are the labels of the config's PolygonLabels/BrushLabels controls in config order.
    The image size is ``image_sizes[task id]`` or ``image_sizes[image basename]`` as ``(width, height)``
    when given, else the regions' ``original_width/height``; a task with neither is left out. Regions
    covering no pixel centre are left out. Malformed input raises :class:`ExportFormatError`.
    """
    mask_controls = {
        control.name: control
        for control in parse_label_config(label_config)
        if control.result_type in (POLYGON, BRUSH)
    }
    if not mask_controls:
        raise ExportFormatError("label config has no PolygonLabels or BrushLabels control")
    categories = list(dict.fromkeys(label for control in mask_controls.values() for label in control.labels))
    builder = CocoBuilder(categories)
    if not isinstance(export, list):
        raise ExportFormatError(f"export must be a JSON list of tasks, got {type(export).__name__}")
    for index, task in enumerate(export):
        _add_task(builder, task, index, mask_controls, predictions, image_sizes or {})
    return builder.to_dict()


def _add_task(
    builder: CocoBuilder,
    task: Any,
    index: int,
    controls: Mapping,
    predictions: bool,
    image_sizes: Mapping,
) -> None:
    if not isinstance(task, dict):
        raise ExportFormatError(f"task #{index}: must be a JSON object, got {type(task).__name__}")
    task_id = task.get("id", f"#{index}")
    where = f"task {task_id}"
    source = "predictions" if predictions else "annotations"
    entries = task.get(source, [])
    if not isinstance(entries, list):
        raise ExportFormatError(f"{where}: '{source}' must be a list, got {type(entries).__name__}")

    regions: list[tuple[dict, float | None]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ExportFormatError(f"{where}: each of '{source}' must be a JSON object, got {entry!r:.80}")
        entry_where = f"{where}, {source[:-1]} {entry.get('id', '?')}"
        if entry.get("was_cancelled"):
            continue
        result = entry.get("result")
        if not isinstance(result, list):
            raise ExportFormatError(f"{entry_where}: 'result' must be a list of regions, got {result!r:.80}")
        fallback_score = entry.get("score")
        for region in result:
            if not isinstance(region, dict):
                raise ExportFormatError(f"{entry_where}: a region is not a JSON object: {region!r:.80}")
            if region.get("type") in (POLYGON, BRUSH) and region.get("from_name") in controls:
                regions.append((region, region.get("score", fallback_score)))

    file_name = _image_reference(task, controls, where)
    size = _image_size(task, file_name, regions, image_sizes, where)
    if size is None:
        return
    image_id = builder.add_image(file_name, *size)
    for region, score in regions:
        region_where = f"{where}, region {region.get('id')!r}"
        try:
            check_region(region, controls)
            mask = region_to_mask(region)
        except InvalidRegionError as error:
            raise ExportFormatError(f"{where}, {error}") from error
        if (region["original_width"], region["original_height"]) != size:
            raise ExportFormatError(
                f"{region_where}: original size {region['original_width']}x{region['original_height']} "
                f"differs from the image's {size[0]}x{size[1]}"
            )
        if score is not None and not isinstance(score, int | float):
            raise ExportFormatError(f"{region_where}: score must be a number, got {score!r}")
        if not mask.any():
            continue
        for label in region["value"][region["type"]]:
            if region["type"] == POLYGON:
                builder.add_polygons(image_id, label, [polygon_pixels(region)], score=score)
            else:
                builder.add_mask(image_id, label, mask, score=score)


def _image_reference(task: dict, controls: Mapping, where: str) -> str:
    data = task.get("data")
    keys = [control.data_key for control in controls.values() if control.data_key]
    if not isinstance(data, dict):
        raise ExportFormatError(f"{where}: 'data' must be a JSON object, got {data!r:.80}")
    for key in keys:
        if isinstance(data.get(key), str):
            return data[key]
    raise ExportFormatError(
        f"{where}: data has no image reference under {keys or ['(no $-value in config)']}"
    )


def _image_size(
    task: dict, file_name: str, regions: list[tuple[dict, Any]], image_sizes: Mapping, where: str
) -> tuple[int, int] | None:
    for key in (task.get("id"), image_basename(file_name)):
        if key in image_sizes:
            width, height = image_sizes[key]
            return int(width), int(height)
    for region, _ in regions:
        width, height = region.get("original_width"), region.get("original_height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
    if regions:
        region_id = regions[0][0].get("id")
        raise ExportFormatError(
            f"{where}, region {region_id!r}: original_width/original_height missing or invalid"
        )
    return None


def _polygon_rings(mask: np.ndarray) -> list[list[float]]:
    # min_area=0: COCO keeps every component the mask has.
    polygons = mask_to_polygons(mask, min_area=0)
    return [np.round(polygon, _PIXEL_DECIMALS).ravel().tolist() for polygon in polygons]


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
