"""Converters between segmentation masks and the formats around them. numpy / OpenCV / pycocotools /
label-studio-sdk only: no torch, no HTTP, nothing from ``segmentor`` or ``ml_backend``.

Coordinates are in the continuous pixel frame: the image spans ``[0, W] x [0, H]``, pixel ``(c, r)``
covers ``[c, c+1] x [r, r+1]``.

- :mod:`converters.polygons` — ``mask_to_polygons``, ``label_map_to_polygons``, ``polygons_to_mask``:
  outer contours corrected to the pixel edges, simplified with a fidelity floor; holes are filled.
- :mod:`converters.labelstudio` — Label Studio regions: ``polygon_regions``, ``brush_region``,
  ``regions_from_label_map``, ``region_to_mask``, ``validate_regions`` (``InvalidRegionError``), and
  ``parse_label_config`` → ``ControlTag`` (``LabelConfigError``), from :mod:`converters.label_config`.
- :mod:`converters.coco` — ``CocoBuilder`` (ids from 1, polygons or RLE) and
  ``label_studio_export_to_coco`` (annotations or predictions, polygon and brush; ``ExportFormatError``).
- :mod:`converters.overlay` — ``overlay_image`` (tinted, outlined segments) and ``write_png``.
- ``python -m converters ls2coco EXPORT.json --config CONFIG.xml --out COCO.json [--predictions]``.
"""

from converters.coco import CocoBuilder, CocoError, ExportFormatError, label_studio_export_to_coco
from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.labelstudio import (
    InvalidRegionError,
    brush_region,
    polygon_regions,
    region_to_mask,
    regions_from_label_map,
    validate_regions,
)
from converters.overlay import OverlayError, overlay_image, write_png
from converters.polygons import InvalidMaskError, label_map_to_polygons, mask_to_polygons, polygons_to_mask

__all__ = [
    "CocoBuilder",
    "CocoError",
    "ControlTag",
    "ExportFormatError",
    "InvalidMaskError",
    "InvalidRegionError",
    "LabelConfigError",
    "OverlayError",
    "brush_region",
    "label_map_to_polygons",
    "label_studio_export_to_coco",
    "mask_to_polygons",
    "overlay_image",
    "parse_label_config",
    "polygon_regions",
    "polygons_to_mask",
    "region_to_mask",
    "regions_from_label_map",
    "validate_regions",
    "write_png",
]
