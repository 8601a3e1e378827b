"""COCO instance-segmentation files that pycocotools loads and evaluates (``COCO``, ``COCOeval``).

Unlike Label Studio's own COCO export, ids start at 1 (an annotation id 0 breaks ``COCOeval``), brush
regions and predictions are exported too, and a mask with holes is written as COCO RLE rather than as
polygons that would fill them. :meth:`CocoBuilder.results` writes the detections list that
``COCO.loadRes`` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from converters.polygons import clip_to_frame, mask_to_polygons, polygons_to_mask
from converters.values import is_int

ENCODINGS = ("auto", "polygon", "rle")
# Decimals kept of a polygon or box coordinate in pixels.
_PIXEL_DECIMALS = 3


class CocoError(ValueError):
    """A call that would make an invalid COCO file (unknown image or category, empty or mis-sized mask)."""


class CocoBuilder:
    """Collects images and mask annotations, with ids from 1.

    ``categories`` is a list of names (ids 1, 2, … in that order) or a mapping name → id (ids chosen by
    the caller, e.g. from ``<Label category="3">``).
    """

    def __init__(self, categories: Sequence[str] | Mapping[str, int]) -> None:
        if isinstance(categories, Mapping):
            ids = dict(categories)
        else:
            names = list(categories)
            if len(set(names)) != len(names):
                raise CocoError(f"category names must be unique, got {names!r}")
            ids = {name: index for index, name in enumerate(names, start=1)}
        if not ids or not all(isinstance(name, str) and name for name in ids):
            raise CocoError(f"categories must be a non-empty list of names, got {list(ids)!r}")
        if len(set(ids.values())) != len(ids) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids.values()
        ):
            raise CocoError(f"category ids must be unique integers >= 0, got {ids!r}")
        self._category_ids = ids
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int, *, extra: Mapping | None = None) -> int:
        """Register an image; returns its id (from 1). ``extra`` keys are added to the image entry."""
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise CocoError(f"image {file_name!r}: size must be positive integers, got {width!r}x{height!r}")
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, **(extra or {})})
        return image_id

    def add_mask(
        self,
        image_id: int,
        category: str,
        mask: np.ndarray,
        *,
        score: float | None = None,
        encoding: str = "auto",
        extra: Mapping | None = None,
    ) -> int:
        """Add one instance mask; returns its annotation id (from 1).

        ``encoding``: ``"polygon"`` (rings of :func:`converters.polygons.mask_to_polygons`, holes filled),
        ``"rle"`` (COCO RLE, exact) or ``"auto"`` (RLE when the mask has holes, polygons otherwise).
        ``area`` and ``bbox`` are those of the pixels ``annToMask`` reads back.
        """
        _check_encoding(encoding)
        mask = self._check_mask(image_id, mask)
        if encoding == "auto":
            encoding = "rle" if has_holes(mask) else "polygon"
        if encoding == "rle":
            return self._append(image_id, category, mask, _rle(mask), _mask_bbox(mask), score, extra)
        # min_area=0: COCO keeps every component.
        rings = [np.round(ring, _PIXEL_DECIMALS) for ring in mask_to_polygons(mask, min_area=0)]
        # area and bbox of what annToMask will read back: the polygons fill any hole.
        written = polygons_to_mask(rings, *mask.shape)
        segmentation = [ring.ravel().tolist() for ring in rings]
        return self._append(image_id, category, written, segmentation, _mask_bbox(written), score, extra)

    def add_polygons(
        self,
        image_id: int,
        category: str,
        polygons: Sequence[np.ndarray],
        *,
        score: float | None = None,
        encoding: str = "polygon",
        box: bool = False,
        extra: Mapping | None = None,
    ) -> int:
        """Add one instance given as rings of ``(x, y)`` pixel coordinates.

        With ``encoding`` ``"polygon"`` or ``"auto"`` the rings are kept (cut to the image, lossless for
        every pixel); ``"rle"`` writes their rasterisation. ``area`` counts the pixels ``annToMask``
        sets. ``bbox`` is the envelope of those pixels, or with ``box=True`` (a drawn rectangle) the
        envelope of the rings themselves, cut to the image: the box the annotator drew.
        """
        _check_encoding(encoding)
        image = self._image(image_id)
        frame = (image["width"], image["height"])
        clipped = (clip_to_frame(np.asarray(ring, dtype=np.float64), frame) for ring in polygons)
        # A ring wholly outside the image clips to nothing. Rounded before rasterising: the area is what
        # annToMask reads back from the written coordinates.
        rings = [np.round(ring, _PIXEL_DECIMALS) for ring in clipped if len(ring) >= 3]
        mask = polygons_to_mask(rings, image["height"], image["width"])
        if box and mask.any():
            corners = np.concatenate(rings)
            low, high = corners.min(axis=0), corners.max(axis=0)
            bbox = [*np.round(low, _PIXEL_DECIMALS).tolist(), *np.round(high - low, _PIXEL_DECIMALS).tolist()]
        else:
            bbox = _mask_bbox(mask)
        if encoding == "rle":
            segmentation: Any = _rle(mask)
        else:
            segmentation = [ring.ravel().tolist() for ring in rings]
        return self._append(image_id, category, mask, segmentation, bbox, score, extra)

    def _image(self, image_id: int) -> dict[str, Any]:
        if not (isinstance(image_id, int) and 1 <= image_id <= len(self._images)):
            raise CocoError(f"unknown image id {image_id!r} ({len(self._images)} images added)")
        return self._images[image_id - 1]

    def _check_mask(self, image_id: int, mask: np.ndarray) -> np.ndarray:
        image = self._image(image_id)
        mask = np.asarray(mask) != 0
        if mask.shape != (image["height"], image["width"]):
            raise CocoError(
                f"mask shape {mask.shape} does not match image {image_id} ({image['height']}x{image['width']})"
            )
        return mask

    def _append(
        self,
        image_id: int,
        category: str,
        mask: np.ndarray,
        segmentation: Any,
        bbox: list[float],
        score: float | None,
        extra: Mapping | None,
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
            "bbox": bbox,
            "iscrowd": 0,
            **(extra or {}),
        }
        if score is not None:
            annotation["score"] = float(score)
        self._annotations.append(annotation)
        return annotation["id"]

    def to_dict(self) -> dict:
        return {
            "info": {"description": "written by converters.coco (EmerDiff Label Studio backend)"},
            "licenses": [],
            "images": [dict(image) for image in self._images],
            "annotations": [dict(annotation) for annotation in self._annotations],
            "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in self._category_ids.items()],
        }

    def results(self) -> list[dict]:
        """The annotations as a ``COCO.loadRes`` detections list: ``image_id``, ``category_id``, ``bbox``,
        ``score`` and ``segmentation`` as RLE (``loadRes`` measures areas of RLE only)."""
        results = []
        for annotation in self._annotations:
            if "score" not in annotation:
                raise CocoError(f"annotation {annotation['id']} has no score: detections need one")
            image = self._image(annotation["image_id"])
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, list):
                rles = coco_mask.frPyObjects(segmentation, image["height"], image["width"])
                segmentation = _rle(coco_mask.decode(coco_mask.merge(rles)))
            results.append(
                {key: annotation[key] for key in annotation if key not in ("id", "area", "iscrowd")}
                | {"segmentation": segmentation}
            )
        return results

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")


def decode_rle(segmentation: Any, width: int, height: int) -> np.ndarray:
    """Bool mask of a COCO RLE ``segmentation`` of an image ``width`` x ``height`` (compressed ``counts``
    string or uncompressed run lengths); :class:`CocoError` for anything else, or a corrupt RLE."""
    if not (isinstance(segmentation, dict) and segmentation.get("size") == [height, width]):
        raise CocoError(f"segmentation must be polygons or RLE of size [{height}, {width}]")
    counts = segmentation.get("counts")
    try:
        if isinstance(counts, list):  # uncompressed RLE: run lengths that must cover the image exactly
            if not all(is_int(run) and run >= 0 for run in counts) or sum(counts) != width * height:
                raise ValueError("run lengths do not add up to the image")
            rle = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode("ascii")}
        else:
            raise ValueError(f"counts must be a string or a list, got {type(counts).__name__}")
        decoded = coco_mask.decode(rle)
        if decoded.max(initial=0) > 1:  # pycocotools decodes a corrupt RLE string into junk, not an error
            raise ValueError("not a valid RLE")
    except (TypeError, ValueError, UnicodeError, OverflowError) as error:
        raise CocoError(f"segmentation cannot be decoded ({error})") from error
    return decoded.astype(bool)


def has_holes(mask: np.ndarray) -> bool:
    """True when filling the outer boundaries of ``mask`` adds pixels, i.e. polygons would lose something."""
    # C order: OpenCV refuses the Fortran-ordered arrays pycocotools decodes.
    binary = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return bool((filled != binary).any())


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise CocoError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def _mask_bbox(mask: np.ndarray) -> list[float]:
    return [float(v) for v in cv2.boundingRect(mask.astype(np.uint8))]


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
