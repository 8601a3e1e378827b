"""Label Studio result regions (polygon, brush, rectangle) from masks and back, and their validation.

Formats (see ``docs/labelstudio.md``): polygon points are percent of ``original_width/height``; brush
regions carry Label Studio's own RLE of the HxWx4 RGBA bytes (``label_studio_sdk.converter.brush``),
which is not COCO RLE; :mod:`converters.brush` encodes it (byte-identical to the SDK, vectorised) and
decodes it in bounded work. A rectangle is ``x``/``y`` (its top-left corner), ``width``/``height``, all in
percent, and ``rotation`` in degrees, clockwise on screen, about that top-left corner; the percentages
become pixels before rotating (the convention of the SDK's YOLO-OBB converter). Label Studio stores
whatever it is sent, so :func:`validate_regions` checks our output against the project's label config
before it leaves the backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converters.brush import BrushRleError, binary_mask_to_rle, decode_rle, max_rle_bytes, read_header
from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.polygons import (
    DEFAULT_MAX_VERTICES,
    DEFAULT_MIN_AREA,
    DEFAULT_TOLERANCE,
    InvalidMaskError,
    as_label_map,
    label_map_to_polygons,
    polygons_to_mask,
)
from converters.values import is_finite_number as _is_finite_number
from converters.values import is_int as _is_int

__all__ = [
    "ControlTag",
    "InvalidRegionError",
    "LabelConfigError",
    "brush_region",
    "check_region",
    "parse_label_config",
    "polygon_pixels",
    "polygon_regions",
    "rectangle_pixels",
    "rectangle_region",
    "region_to_mask",
    "regions_from_label_map",
    "validate_regions",
]

POLYGON = "polygonlabels"
BRUSH = "brushlabels"
RECTANGLE = "rectanglelabels"
#: Region types that cover an area of the image: the ones :func:`region_to_mask` rasterises.
MASK_TYPES = (POLYGON, BRUSH, RECTANGLE)
#: Largest image (width x height) a region may claim: 16384², a 256 MiB mask. Sizes come from untrusted
#: JSON, and a region is rasterised at its full size.
MAX_PIXELS = 1 << 28
# Decimals kept of a percent coordinate: 1e-6 % is 1e-4 px on a 10,000 px image. Fewer moved vertices
# enough to flip a pixel centre lying on an edge (4 decimals lost 1 px of 42 on a 128 px wide image).
_PERCENT_DECIMALS = 6


class InvalidRegionError(ValueError):
    """A region Label Studio would store but not show, or show wrongly; the message names the region."""


def polygon_regions(
    polygons: Sequence[np.ndarray],
    *,
    width: int,
    height: int,
    label: str,
    from_name: str,
    to_name: str,
    score: float | None = None,
    id_prefix: str = "r",
) -> list[dict]:
    """One ``polygonlabels`` region per ring of ``(x, y)`` pixel coordinates (ids ``{id_prefix}1``...)."""
    _check_size(width, height)
    scale = np.array([100.0 / width, 100.0 / height])
    regions = []
    for index, polygon in enumerate(polygons, start=1):
        points = np.clip(np.asarray(polygon, dtype=np.float64) * scale, 0.0, 100.0).round(_PERCENT_DECIMALS)
        value = {"points": points.tolist(), "closed": True, POLYGON: [label]}
        regions.append(
            _region(f"{id_prefix}{index}", POLYGON, value, width, height, from_name, to_name, score)
        )
    return regions


def brush_region(
    mask: np.ndarray,
    *,
    label: str,
    from_name: str,
    to_name: str,
    score: float | None = None,
    region_id: str,
) -> dict:
    """A ``brushlabels`` region holding ``mask`` (HxW, non-zero = painted) exactly, as Label Studio RLE."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise InvalidRegionError(
            f"region {region_id!r}: brush mask must be a non-empty 2-D array, got {mask.shape}"
        )
    height, width = mask.shape
    rle = binary_mask_to_rle(mask)
    value = {"format": "rle", "rle": rle, BRUSH: [label]}
    return _region(region_id, BRUSH, value, width, height, from_name, to_name, score)


def rectangle_region(
    corners: np.ndarray,
    *,
    width: int,
    height: int,
    label: str,
    from_name: str,
    to_name: str,
    score: float | None = None,
    region_id: str,
) -> dict:
    """A ``rectanglelabels`` region of a rectangle given by its 4 pixel corners in drawing order.

    The first corner is the one Label Studio calls top-left (its ``x``/``y``); the first edge is the
    rectangle's width, at ``rotation`` degrees clockwise from the x axis. The inverse of
    :func:`rectangle_pixels` (up to rounding to 1e-4 %).
    """
    _check_size(width, height)
    corners = np.asarray(corners, dtype=np.float64)
    if corners.shape != (4, 2) or not np.isfinite(corners).all():
        raise InvalidRegionError(f"region {region_id!r}: a rectangle needs 4 finite (x, y) corners")
    along, across = corners[1] - corners[0], corners[3] - corners[0]
    value = {
        "x": 100.0 * corners[0, 0] / width,
        "y": 100.0 * corners[0, 1] / height,
        "width": 100.0 * float(np.hypot(*along)) / width,
        "height": 100.0 * float(np.hypot(*across)) / height,
        "rotation": math.degrees(math.atan2(along[1], along[0])) % 360.0,
    }
    value = {key: round(number, _PERCENT_DECIMALS) for key, number in value.items()}
    value[RECTANGLE] = [label]
    return _region(region_id, RECTANGLE, value, width, height, from_name, to_name, score)


def regions_from_label_map(
    label_map: np.ndarray,
    *,
    kind: str,
    label: str,
    from_name: str,
    to_name: str,
    scores: Mapping[int, float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    min_area: float = DEFAULT_MIN_AREA,
    max_vertices: int = DEFAULT_MAX_VERTICES,
    labels: Mapping[int, str] | None = None,
) -> list[dict]:
    """Regions of every segment value of an integer HxW ``label_map``, labelled ``labels[value]`` (label
    learning's per-segment labels) where given, else ``label``.

    ``kind="polygon"``: one region per outer contour (id ``s{value}-{n}``), holes filled;
    ``kind="brush"``: one exact region per segment (id ``s{value}``). Segments, or polygon components,
    with fewer than ``min_area`` pixels are left out. ``scores`` maps a segment value to its score.
    """
    if kind not in ("polygon", "brush"):
        raise ValueError(f"kind must be 'polygon' or 'brush', got {kind!r}")
    label_map = as_label_map(label_map)
    height, width = label_map.shape
    scores = scores or {}
    labels = labels or {}
    regions: list[dict] = []
    if kind == "polygon":
        per_value = label_map_to_polygons(
            label_map, tolerance=tolerance, min_area=min_area, max_vertices=max_vertices
        )
        for value, polygons in per_value.items():
            regions += polygon_regions(
                polygons,
                width=width,
                height=height,
                label=labels.get(value, label),
                from_name=from_name,
                to_name=to_name,
                score=scores.get(value),
                id_prefix=f"s{value}-",
            )
        return regions
    for value in np.unique(label_map):
        segment = label_map == value
        if segment.sum() < min_area:
            continue
        regions.append(
            brush_region(
                segment,
                label=labels.get(int(value), label),
                from_name=from_name,
                to_name=to_name,
                score=scores.get(int(value)),
                region_id=f"s{value}",
            )
        )
    return regions


def region_to_mask(region: dict) -> np.ndarray:
    """Bool ``original_height`` x ``original_width`` mask of a polygon, brush or rectangle region.

    Polygons and rectangles set the pixels whose centre lies inside (pycocotools' rule, see
    :func:`converters.polygons.polygons_to_mask`); the parts outside the image are cut off.
    """
    region_id = region.get("id") if isinstance(region, dict) else None
    if not isinstance(region, dict):
        raise InvalidRegionError(f"region must be a JSON object, got {type(region).__name__}")
    _check_region_shape(region, region_id)
    width, height = region["original_width"], region["original_height"]
    value = region["value"]
    try:
        if region["type"] == POLYGON:
            return polygons_to_mask([polygon_pixels(region)], height, width)
        if region["type"] == RECTANGLE:
            return polygons_to_mask([rectangle_pixels(region)], height, width)
    except InvalidMaskError as error:
        raise InvalidRegionError(f"region {region_id!r}: {error}") from error
    try:
        flat = decode_rle(value["rle"], expected_values=width * height * 4)
    except BrushRleError as error:
        raise InvalidRegionError(f"region {region_id!r}: brush rle is corrupt ({error})") from error
    # Label Studio paints RGBA; the alpha channel is the mask.
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def polygon_pixels(region: dict) -> np.ndarray:
    """``(N, 2)`` pixel coordinates of a polygon region's percent points."""
    scale = [region["original_width"] / 100.0, region["original_height"] / 100.0]
    return np.asarray(region["value"]["points"], dtype=np.float64) * scale


def rectangle_pixels(region: dict) -> np.ndarray:
    """``(4, 2)`` pixel corners of a rectangle region: top-left, top-right, bottom-right, bottom-left
    before rotation, rotated clockwise by ``rotation`` degrees about the top-left corner."""
    value = region["value"]
    scale_x, scale_y = region["original_width"] / 100.0, region["original_height"] / 100.0
    left, top = value["x"] * scale_x, value["y"] * scale_y
    width, height = value["width"] * scale_x, value["height"] * scale_y
    angle = math.radians(value.get("rotation", 0) or 0)
    cos, sin = math.cos(angle), math.sin(angle)
    # y grows downwards, so this rotation matrix turns clockwise on screen, as Label Studio draws it.
    offsets = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    with np.errstate(over="ignore", invalid="ignore"):
        corners = offsets @ np.array([[cos, sin], [-sin, cos]]) + np.array([left, top])
    if not np.isfinite(corners).all():
        # Finite percentages can still overflow once scaled to pixels and turned (1e307 % of 1000 px).
        raise InvalidRegionError(
            f"region {region.get('id')!r}: rectangle x/y/width/height are too large to place on the image"
        )
    return corners


def validate_regions(regions: Sequence[dict], label_config: str) -> None:
    """Raise :class:`InvalidRegionError` for the first region Label Studio would not show as meant.

    Checked: ids present and unique; ``from_name`` a control of the config and ``to_name`` its ``toName``;
    ``type`` the control's (``polygonlabels`` ↔ ``PolygonLabels``, ``brushlabels`` ↔ ``BrushLabels``,
    ``rectanglelabels`` ↔ ``RectangleLabels``); labels in that control's label list;
    ``original_width/height`` present; polygons with >= 3 numeric points inside [0, 100]; brush ``rle`` a
    list of byte values of the right length; rectangles with finite ``x``, ``y``, ``rotation`` and
    positive ``width``, ``height``.
    """
    controls = {control.name: control for control in parse_label_config(label_config)}
    seen: set[str] = set()
    for index, region in enumerate(regions):
        if not isinstance(region, dict):
            raise InvalidRegionError(f"region #{index} must be a JSON object, got {type(region).__name__}")
        region_id = region.get("id")
        if not isinstance(region_id, str) or not region_id:
            raise InvalidRegionError(f"region #{index}: 'id' must be a non-empty string, got {region_id!r}")
        if region_id in seen:
            raise InvalidRegionError(f"region {region_id!r}: duplicate id")
        seen.add(region_id)
        check_region(region, controls)


def check_region(region: dict, controls: Mapping[str, ControlTag]) -> None:
    """Check one region against the config's controls (by name); see :func:`validate_regions`."""
    region_id = region.get("id")
    from_name, to_name = region.get("from_name"), region.get("to_name")
    control = controls.get(from_name) if isinstance(from_name, str) else None
    if control is None:
        raise InvalidRegionError(
            f"region {region_id!r}: from_name {from_name!r} is not a control of the label config "
            f"(controls: {sorted(controls)})"
        )
    if to_name not in control.to_names:
        raise InvalidRegionError(
            f"region {region_id!r}: to_name {to_name!r} is not the toName of control {from_name!r} "
            f"({control.to_name!r})"
        )
    if region.get("type") != control.result_type:
        raise InvalidRegionError(
            f"region {region_id!r}: type {region.get('type')!r} does not match control {from_name!r} "
            f"(<{control.tag}> expects {control.result_type!r})"
        )
    _check_region_shape(region, region_id)
    unknown = [label for label in region["value"][region["type"]] if label not in control.labels]
    if unknown:
        raise InvalidRegionError(
            f"region {region_id!r}: labels {unknown} are not in control {from_name!r} "
            f"(labels: {control.labels})"
        )


def _check_region_shape(region: dict, region_id: Any) -> None:
    """Fields and geometry of a polygon, brush or rectangle region, independent of any label config."""
    region_type = region.get("type")
    if region_type not in MASK_TYPES:
        raise InvalidRegionError(
            f"region {region_id!r}: type {region_type!r} is not a mask region (one of {MASK_TYPES})"
        )
    for key in ("original_width", "original_height"):
        size = region.get(key)
        if not _is_int(size) or size <= 0:
            raise InvalidRegionError(f"region {region_id!r}: {key} must be a positive integer, got {size!r:.40}")
    if region["original_width"] * region["original_height"] > MAX_PIXELS:
        raise InvalidRegionError(
            f"region {region_id!r}: image size {region['original_width']}x{region['original_height']} is over "
            f"the {MAX_PIXELS} pixel limit"
        )
    value = region.get("value")
    if not isinstance(value, dict):
        raise InvalidRegionError(f"region {region_id!r}: 'value' must be a JSON object, got {value!r:.80}")
    labels = value.get(region_type)
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise InvalidRegionError(
            f"region {region_id!r}: value.{region_type} must be a non-empty list of label strings, "
            f"got {labels!r}"
        )
    if region_type == POLYGON:
        _check_points(value.get("points"), region_id)
    elif region_type == RECTANGLE:
        _check_rectangle(value, region_id)
    else:
        _check_rle(value, region_id, region["original_width"] * region["original_height"] * 4)


def _check_points(points: Any, region_id: Any) -> None:
    if not isinstance(points, list) or len(points) < 3:
        count = len(points) if isinstance(points, list) else type(points).__name__
        raise InvalidRegionError(f"region {region_id!r}: a polygon needs a list of >= 3 points, got {count}")
    for index, point in enumerate(points):
        if not (
            isinstance(point, list | tuple) and len(point) == 2 and all(_is_finite_number(c) for c in point)
        ):
            raise InvalidRegionError(
                f"region {region_id!r}: point {index} is not an [x, y] pair of numbers: {point!r:.80}"
            )
        if not all(0.0 <= c <= 100.0 for c in point):
            raise InvalidRegionError(
                f"region {region_id!r}: point {index} {point!r} is outside [0, 100] (points are percent)"
            )


def _check_rectangle(value: dict, region_id: Any) -> None:
    # Label Studio lets a rectangle reach past the image edge while it is dragged; the mask is cut there.
    for key in ("x", "y", "width", "height", "rotation"):
        number = value.get(key, 0 if key == "rotation" else None)
        if not _is_finite_number(number):
            raise InvalidRegionError(
                f"region {region_id!r}: rectangle {key} must be a finite number, got {number!r:.40}"
            )
    for key in ("width", "height"):
        if value[key] <= 0:
            raise InvalidRegionError(f"region {region_id!r}: rectangle {key} must be > 0, got {value[key]!r}")


def _check_rle(value: dict, region_id: Any, expected_values: int) -> None:
    if value.get("format") != "rle":
        raise InvalidRegionError(
            f"region {region_id!r}: brush format must be 'rle', got {value.get('format')!r}"
        )
    rle = value.get("rle")
    if not isinstance(rle, list) or not rle or not all(_is_byte(byte) for byte in rle[:7]):
        raise InvalidRegionError(
            f"region {region_id!r}: brush rle must be a non-empty list of ints in [0, 255]"
        )
    # The header's first 32 bits are the number of values it decodes to (H x W x 4). Checked, with the
    # list's length, before the rest of the list is looked at: padding must not cost work.
    encoded = int.from_bytes(bytes(rle[:4]), "big") if len(rle) >= 4 else -1
    if encoded != expected_values:
        raise InvalidRegionError(
            f"region {region_id!r}: brush rle encodes {encoded} values, expected {expected_values} "
            "(original_width x original_height x 4)"
        )
    try:
        _, word_bits, sizes = read_header(rle)
    except BrushRleError as error:
        raise InvalidRegionError(f"region {region_id!r}: {error}") from error
    if word_bits > 8:
        raise InvalidRegionError(
            f"region {region_id!r}: brush rle word size is {word_bits} bits; brush values are bytes (at most 8)"
        )
    if len(rle) > max_rle_bytes(encoded, word_bits, sizes):
        raise InvalidRegionError(
            f"region {region_id!r}: brush rle is {len(rle)} bytes, longer than any encoding of "
            f"{encoded} values can be ({max_rle_bytes(encoded, word_bits, sizes)})"
        )
    if not all(_is_byte(byte) for byte in rle):
        raise InvalidRegionError(
            f"region {region_id!r}: brush rle must be a non-empty list of ints in [0, 255]"
        )


def _region(
    region_id: str,
    region_type: str,
    value: dict,
    width: int,
    height: int,
    from_name: str,
    to_name: str,
    score: float | None,
) -> dict:
    region = {
        "id": region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": region_type,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": value,
    }
    if score is not None:
        region["score"] = float(score)
    return region


def _check_size(width: int, height: int) -> None:
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise InvalidRegionError(
            f"image size must be positive integers, got width={width!r} height={height!r}"
        )


def _is_byte(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= 255
