"""Converters between segmentation masks and the formats around them. numpy / OpenCV / pycocotools /
Pillow / label-studio-sdk only: no torch, no HTTP, nothing from ``segmentor`` or ``ml_backend``.

Coordinates are in the continuous pixel frame: the image spans ``[0, W] x [0, H]``, pixel ``(c, r)``
covers ``[c, c+1] x [r, r+1]``.

- :mod:`converters.polygons` — ``mask_to_polygons``, ``label_map_to_polygons``, ``polygons_to_mask``:
  outer contours corrected to the pixel edges, simplified with a fidelity floor; holes are filled.
- :mod:`converters.labelstudio` — Label Studio regions: ``polygon_regions``, ``brush_region``,
  ``rectangle_region``, ``regions_from_label_map``, ``region_to_mask`` (polygon, brush, rotated
  rectangle), ``validate_regions`` (``InvalidRegionError``), and ``parse_label_config`` → ``ControlTag``
  (``LabelConfigError``), from :mod:`converters.label_config`.
- :mod:`converters.coco` — ``CocoBuilder`` (ids from 1, polygons or RLE, ``results()`` for loadRes).
- :mod:`converters.ls2coco` — ``label_studio_export_to_coco`` → ``CocoExport`` (``ExportFormatError``);
  :mod:`converters.images` — unique relative file names, image files and sizes.
- :mod:`converters.coco2ls` — ``coco_to_label_studio_tasks``; :mod:`converters.evaluate` — COCOeval.
- :mod:`converters.ls2yolo` — ``label_studio_export_to_yolo`` → ``YoloExport`` (YOLO segmentation labels).
- :mod:`converters.brush` — Label Studio's brush RLE: ``mask_to_rle`` / ``binary_mask_to_rle``
  (byte-identical to the SDK's ``mask2rle``, vectorised) and ``decode_rle`` (bounded work on untrusted data);
  :mod:`converters.values` — checks of untrusted JSON numbers and ids.
- :mod:`converters.overlay` — ``overlay_image`` (tinted, outlined segments) and ``write_png``.
- ``python -m converters ls2coco|evaluate|coco2ls|ls2yolo`` (see :mod:`converters.__main__`);
  ``python -m converters.rle_benchmark`` times the RLE encoder and decoder against the SDK's.
"""

from converters.coco import CocoBuilder, CocoError
from converters.coco2ls import CocoFormatError, coco_to_label_studio_tasks
from converters.evaluate import EvaluationInputError, evaluate
from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.labelstudio import (
    InvalidRegionError,
    brush_region,
    polygon_regions,
    rectangle_region,
    region_to_mask,
    regions_from_label_map,
    validate_regions,
)
from converters.ls2coco import CocoExport, ExportFormatError, label_studio_export_to_coco
from converters.ls2yolo import YoloExport, label_studio_export_to_yolo
from converters.overlay import OverlayError, overlay_image, write_png
from converters.polygons import InvalidMaskError, label_map_to_polygons, mask_to_polygons, polygons_to_mask

__all__ = [
    "CocoBuilder",
    "CocoError",
    "CocoExport",
    "CocoFormatError",
    "ControlTag",
    "EvaluationInputError",
    "ExportFormatError",
    "InvalidMaskError",
    "InvalidRegionError",
    "LabelConfigError",
    "OverlayError",
    "YoloExport",
    "brush_region",
    "coco_to_label_studio_tasks",
    "evaluate",
    "label_map_to_polygons",
    "label_studio_export_to_coco",
    "label_studio_export_to_yolo",
    "mask_to_polygons",
    "overlay_image",
    "parse_label_config",
    "polygon_regions",
    "polygons_to_mask",
    "rectangle_region",
    "region_to_mask",
    "regions_from_label_map",
    "validate_regions",
    "write_png",
]
