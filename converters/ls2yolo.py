"""Label Studio JSON export → a YOLO segmentation dataset (Ultralytics' ``labels/*.txt`` + ``data.yaml``).

Each kept task (the same selection rules as :mod:`converters.ls2coco`) gets ``labels/<name>.txt``, where
``<name>`` is the task's unique relative image name with the suffix ``.txt``; the images themselves go
under ``images/<name>`` (they are not copied: the export names them, see ``docs/CONVERTERS.md``). One
line per polygon: ``<class> x1 y1 x2 y2 ...``, coordinates divided by the image width and height
(``[0, 1]``, 6 decimals), class indices from 0 in the label config's order (``category="N"`` attributes
are a COCO notion and do not apply: YOLO classes are ``0 .. nc-1``).

What each region becomes:
- a polygon: its ring, cut to the image;
- a rectangle, rotated or not: its 4 corners, cut to the image;
- a brush mask: the outer boundary of each connected piece (:func:`converters.polygons.mask_to_polygons`,
  every piece kept), **one line per piece, holes filled**. A YOLO segmentation line is one polygon, so
  a brush region in two pieces becomes two instances of its class, and a hole (a road around a car) is
  labelled as the class: the exact mask is only in the COCO export (``ls2coco`` writes RLE for holes).
An annotated task without regions is an empty ``.txt`` (a negative image).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from converters.images import ImageFolders
from converters.labelstudio import BRUSH, POLYGON, polygon_pixels, rectangle_pixels, region_to_mask
from converters.ls2coco import ExportFormatError, read_export
from converters.polygons import clip_to_frame, mask_to_polygons

#: ``all`` would stack several annotators' regions into one label file: duplicated objects.
YOLO_SELECTIONS = ("ground-truth", "latest")
_DECIMALS = 6


@dataclass
class YoloExport:
    """``labels``: relative label-file path → its text; ``names``: class names, index = class id;
    ``data_yaml``: the dataset file's text; what was not converted, as in :class:`converters.ls2coco.CocoExport`."""

    labels: dict[str, str]
    names: list[str]
    data_yaml: str
    skipped: Counter = field(default_factory=Counter)
    unannotated: list = field(default_factory=list)


def label_studio_export_to_yolo(
    export: Any,
    label_config: str,
    *,
    annotations: str = "ground-truth",
    folders: ImageFolders | None = None,
    keep_unannotated: bool = False,
    dataset_path: str = ".",
) -> YoloExport:
    """Convert a Label Studio JSON export (see the module docstring). Raises :class:`ExportFormatError` or
    :class:`converters.label_config.LabelConfigError` with a one-line message. ``dataset_path`` is the
    ``path`` written in ``data.yaml`` (Ultralytics reads a relative one under its own datasets folder)."""
    if annotations not in YOLO_SELECTIONS:
        raise ExportFormatError(f"annotations must be one of {YOLO_SELECTIONS} for YOLO, got {annotations!r}")
    content = read_export(
        export, label_config, annotations=annotations, folders=folders, keep_unannotated=keep_unannotated
    )
    names = list(content.categories)  # the config's order
    classes = {name: index for index, name in enumerate(names)}
    labels = {}
    for task in content.tasks:
        width, height = content.sizes[task.id]
        lines = []
        for item in task.regions:
            region = item.region
            (label,) = region["value"][region["type"]]
            for ring in _rings(region, item.where, (width, height)):
                lines.append(_line(classes[label], ring, width, height))
        labels[label_path(content.names[task.id])] = "".join(f"{line}\n" for line in lines)
    return YoloExport(labels, names, data_yaml(names, dataset_path), content.skipped, content.unannotated)


def label_path(image_name: str) -> str:
    """``labels/<image name with .txt>``: where Ultralytics looks for the labels of ``images/<image name>``."""
    return str(PurePosixPath("labels") / PurePosixPath(image_name).with_suffix(".txt"))


def data_yaml(names: Sequence[str], dataset_path: str = ".") -> str:
    """Ultralytics' dataset file: the folder layout and the class names by index (JSON strings are YAML)."""
    lines = ["# written by python -m converters ls2yolo", f"path: {json.dumps(dataset_path)}", "train: images",
             "val: images",
             f"nc: {len(names)}", "names:"]
    lines += [f"  {index}: {json.dumps(name)}" for index, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def read_label_file(text: str, width: int, height: int) -> list[tuple[int, np.ndarray]]:
    """The ``(class, (N, 2) pixel ring)`` lines of a YOLO segmentation label file of a ``width`` x
    ``height`` image (for checks and round trips)."""
    rings = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) < 7 or len(fields) % 2 == 0:
            raise ValueError(f"line {number}: expected a class and >= 3 x y pairs, got {len(fields)} fields")
        points = np.asarray(fields[1:], dtype=np.float64).reshape(-1, 2) * [width, height]
        rings.append((int(fields[0]), points))
    return rings


def _rings(region: dict, where: str, frame: tuple[int, int]) -> list[np.ndarray]:
    try:
        if region["type"] == BRUSH:
            rings = mask_to_polygons(region_to_mask(region), min_area=0)
        else:
            ring = polygon_pixels(region) if region["type"] == POLYGON else rectangle_pixels(region)
            rings = [clip_to_frame(ring, frame)]
    except ValueError as error:  # InvalidRegionError: corrupt brush data, a rectangle past any image
        raise ExportFormatError(f"{where.rsplit(', region', 1)[0]}, {error}") from error
    rings = [ring for ring in rings if len(ring) >= 3]
    if not rings:
        raise ExportFormatError(f"{where}: lies outside the image or covers no pixel: redraw or delete it")
    return rings


def _line(class_id: int, ring: np.ndarray, width: int, height: int) -> str:
    points = np.clip(ring / [width, height], 0.0, 1.0).round(_DECIMALS)
    return " ".join([str(class_id), *(f"{value:.{_DECIMALS}f}".rstrip("0").rstrip(".") for value in points.ravel())])
