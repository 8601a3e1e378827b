"""Label Studio JSON export → a COCO instance-segmentation dataset (and a detections list of its predictions).

What each region type becomes (README, "Converters"): a polygon keeps its ring; a brush
region its exact mask (RLE when it has holes, polygons otherwise, or as ``encoding`` says); a rectangle,
rotated or not, its 4 corners as a polygon and the box as drawn as ``bbox``. Every other result
(keypoints, ellipses, choices, text…) is counted in :attr:`CocoExport.skipped`, never silently lost.

Choices a training pipeline can rely on:
- One annotation per task by default: its ground-truth annotation, else its latest (``updated_at``,
  then id) non-cancelled one; ``"latest"`` ignores the ground-truth flag; ``"all"`` keeps every
  non-cancelled annotation (each COCO annotation names its ``ls_annotation_id``).
- An annotated task without regions is an image without annotations (a negative); a task nobody
  annotated is left out (:attr:`CocoExport.unannotated`) unless ``keep_unannotated``.
- A region with several labels is refused (COCO gives an object one category; picking one would be a
  guess): the error names the task, the annotation and the region.
- Category ids: ``<Label category="N">`` wins (as in Label Studio's export); the other labels take the
  smallest free ids from 1 in config order. Every label of the converted controls is a category.
- ``file_name`` is a relative path unique within the dataset (see :mod:`converters.images`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from converters.coco import ENCODINGS, CocoBuilder, CocoError
from converters.images import ImageFileError, ImageFolders, image_size, unique_names
from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.labelstudio import (
    BRUSH,
    MASK_TYPES,
    POLYGON,
    RECTANGLE,
    InvalidRegionError,
    check_region,
    polygon_pixels,
    rectangle_pixels,
    region_to_mask,
)
from converters.values import is_finite_number, is_id, is_int

SELECTIONS = ("ground-truth", "latest", "all")


class ExportFormatError(ValueError):
    """A Label Studio export that cannot be converted faithfully; the message names the task and region."""


@dataclass
class CocoExport:
    """The converted dataset, the predictions as ``COCO.loadRes`` detections (when asked), and what was
    not converted: result types with their counts, and the ids of tasks left out as unannotated."""

    dataset: dict
    results: list[dict] | None = None
    skipped: Counter = field(default_factory=Counter)
    unannotated: list = field(default_factory=list)


@dataclass
class _Region:
    region: dict
    where: str
    extra: dict
    score: float | None = None


@dataclass
class _Task:
    id: Any
    where: str
    reference: str
    annotated: bool
    regions: list[_Region]
    predicted: list[_Region]
    skipped: Counter


def label_studio_export_to_coco(
    export: Any,
    label_config: str,
    *,
    annotations: str = "ground-truth",
    encoding: str = "auto",
    predictions: bool = False,
    model_version: str | None = None,
    folders: ImageFolders | None = None,
    keep_unannotated: bool = False,
) -> CocoExport:
    """Convert a Label Studio JSON export (see the module docstring for the rules).

    ``annotations``: one of :data:`SELECTIONS`. ``predictions``: also convert each kept task's latest
    prediction (of ``model_version`` when given) into :attr:`CocoExport.results`, whose image ids are
    the dataset's. ``folders``: where image files are read for the size of a task without regions, and
    to check the regions' ``original_width/height`` against the file. Raises :class:`ExportFormatError`
    or :class:`LabelConfigError` with a one-line message.
    """
    if encoding not in ENCODINGS:
        raise ExportFormatError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    content = read_export(
        export,
        label_config,
        annotations=annotations,
        predictions=predictions,
        model_version=model_version,
        folders=folders,
        keep_unannotated=keep_unannotated,
    )
    converted = CocoExport(dataset={}, skipped=content.skipped, unannotated=content.unannotated)
    builder = CocoBuilder(content.categories)
    detections = CocoBuilder(content.categories)
    for task in content.tasks:
        image_id = builder.add_image(content.names[task.id], *content.sizes[task.id], extra={"ls_task_id": task.id})
        detections.add_image(content.names[task.id], *content.sizes[task.id])
        for region in task.regions:
            _add_region(builder, image_id, region, encoding)
        for region in task.predicted:
            _add_region(detections, image_id, region, encoding)
    converted.dataset = builder.to_dict()
    converted.results = detections.results() if predictions else None
    return converted


@dataclass
class ExportContent:
    """What an export holds for a converter: the kept tasks (their checked mask regions), each task's
    unique relative image name and (width, height), the label → category id map (config order), and
    what was left out."""

    tasks: list[_Task]
    names: dict[Any, str]
    sizes: dict[Any, tuple[int, int]]
    categories: dict[str, int]
    skipped: Counter
    unannotated: list


def read_export(
    export: Any,
    label_config: str,
    *,
    annotations: str = "ground-truth",
    predictions: bool = False,
    model_version: str | None = None,
    folders: ImageFolders | None = None,
    keep_unannotated: bool = False,
) -> ExportContent:
    """Read and check a Label Studio export (the rules of the module docstring), for any output format."""
    if annotations not in SELECTIONS:
        raise ExportFormatError(f"annotations must be one of {SELECTIONS}, got {annotations!r}")
    controls = {c.name: c for c in parse_label_config(label_config) if c.result_type in MASK_TYPES}
    if not controls:
        raise ExportFormatError("label config has no PolygonLabels, BrushLabels or RectangleLabels control")
    data_keys = sorted({str(control.data_key) for control in controls.values()})
    if len(data_keys) != 1:
        raise ExportFormatError(f"label config: the controls label different task fields {data_keys}")
    if not isinstance(export, list):
        raise ExportFormatError(f"export must be a JSON list of tasks, got {type(export).__name__}")

    tasks = []
    skipped: Counter = Counter()
    for index, task in enumerate(export):
        read = _read_task(task, index, data_keys[0], controls, annotations, predictions, model_version)
        tasks.append(read)
        skipped.update(read.skipped)
    duplicates = [key for key, count in Counter(t.id for t in tasks).items() if count > 1]
    if duplicates:
        raise ExportFormatError(f"task ids {duplicates} appear more than once in the export")
    unannotated = [t.id for t in tasks if not (t.annotated or keep_unannotated)]
    kept = [t for t in tasks if t.annotated or keep_unannotated]
    sizes = _image_sizes(kept, folders or ImageFolders())
    try:
        names = unique_names({t.id: t.reference for t in kept})
    except ImageFileError as error:
        raise ExportFormatError(str(error)) from error
    return ExportContent(kept, names, sizes, category_ids(controls.values()), skipped, unannotated)


def category_ids(controls: Iterable[ControlTag]) -> dict[str, int]:
    """Label → COCO category id: ``category="N"`` attributes first, then free ids from 1 in config order."""
    order: list[str] = []
    explicit: dict[str, int] = {}
    for control in controls:
        for label in control.labels:
            if label not in order:
                order.append(label)
            raw = control.label_attrs.get(label, {}).get("category")
            if raw is None:
                continue
            if not raw.strip().isdigit():
                raise LabelConfigError(
                    f'label config: <Label value="{label}" category="{raw}">: category must be an integer >= 0'
                )
            if explicit.setdefault(label, int(raw)) != int(raw):
                raise LabelConfigError(f"label config: label {label!r} has two different category ids")
    clashing = [i for i, count in Counter(explicit.values()).items() if count > 1]
    if clashing:
        raise LabelConfigError(f"label config: category ids {clashing} are given to several labels")
    free = (i for i in itertools.count(1) if i not in explicit.values())
    return {label: explicit[label] if label in explicit else next(free) for label in order}


def _read_task(
    task: Any,
    index: int,
    data_key: str,
    controls: Mapping[str, ControlTag],
    selection: str,
    predictions: bool,
    model_version: str | None,
) -> _Task:
    if not isinstance(task, dict):
        raise ExportFormatError(f"task #{index}: must be a JSON object, got {type(task).__name__}")
    task_id = task.get("id", f"#{index}")
    if not is_id(task_id):
        raise ExportFormatError(f"task #{index}: 'id' must be an integer or a string, got {task_id!r:.40}")
    where = f"task {task_id}"
    data = task.get("data")
    if not isinstance(data, dict):
        raise ExportFormatError(f"{where}: 'data' must be a JSON object, got {data!r:.80}")
    reference = data.get(data_key)
    if not isinstance(reference, str) or not reference:
        raise ExportFormatError(f"{where}: data has no image reference under {data_key!r}")

    entries = [e for e in _entries(task, "annotations", where) if not e.get("was_cancelled")]
    chosen = _choose_annotations(entries, selection, where)
    skipped: Counter = Counter()
    regions = [r for entry in chosen for r in _regions(entry, "annotation", where, controls, skipped)]
    predicted: list[_Region] = []
    if predictions:
        candidates = [
            e
            for e in _entries(task, "predictions", where)
            if model_version is None or e.get("model_version") == model_version
        ]
        if candidates:
            predicted = _regions(max(candidates, key=_recency), "prediction", where, controls, skipped)
    return _Task(task_id, where, reference, bool(chosen), regions, predicted, skipped)


def _entries(task: dict, source: str, where: str) -> list[dict]:
    entries = task.get(source, [])
    if not isinstance(entries, list):
        raise ExportFormatError(f"{where}: '{source}' must be a list, got {type(entries).__name__}")
    for entry in entries:
        if source == "predictions" and isinstance(entry, int):
            raise ExportFormatError(
                f"{where}: predictions are listed by id only (Label Studio's quick export): export a snapshot "
                "with full predictions (serialization option predictions.only_id false)"
            )
        if not isinstance(entry, dict):
            raise ExportFormatError(f"{where}: each of '{source}' must be a JSON object, got {entry!r:.80}")
        if "id" in entry and not is_id(entry["id"]):
            raise ExportFormatError(
                f"{where}: {source[:-1]} ids must be integers or strings, got {entry['id']!r:.40}"
            )
        _recency(entry, f"{where}, {source[:-1]} {entry.get('id', '?')}")
    return entries


def _choose_annotations(entries: list[dict], selection: str, where: str) -> list[dict]:
    if selection == "all" or not entries:
        return entries
    if selection == "ground-truth":
        truths = [e for e in entries if e.get("ground_truth") is True]
        entries = truths or entries
    return [max(entries, key=_recency)]


def _recency(entry: dict, where: str | None = None) -> tuple[float, int | float]:
    """Sort key of "latest": ``updated_at`` (else ``created_at``), then the id."""
    stamp = entry.get("updated_at") or entry.get("created_at")
    seconds = -math.inf
    if stamp is not None:
        try:
            moment = datetime.fromisoformat(str(stamp))
        except ValueError as error:
            raise ExportFormatError(f"{where}: timestamp {stamp!r} is not ISO 8601") from error
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    entry_id = entry.get("id")
    # Integer ids compare exactly (a float would tie ids above 2**53); other ids lose every tie.
    return seconds, entry_id if is_int(entry_id) else -math.inf


def _regions(entry: dict, kind: str, where: str, controls: Mapping[str, ControlTag], skipped: Counter) -> list[_Region]:
    """The mask regions of one annotation or prediction, checked; other result types counted in ``skipped``."""
    entry_where = f"{where}, {kind} {entry.get('id', '?')}"
    result = entry.get("result")
    if not isinstance(result, list):
        raise ExportFormatError(f"{entry_where}: 'result' must be a list of regions, got {result!r:.80}")
    regions = []
    for region in result:
        if not isinstance(region, dict):
            raise ExportFormatError(f"{entry_where}: a region is not a JSON object: {region!r:.80}")
        if region.get("type") not in MASK_TYPES:
            skipped[str(region.get("type"))] += 1
            continue
        region_where = f"{entry_where}, region {region.get('id')!r}"
        try:
            check_region(region, controls)
        except InvalidRegionError as error:
            raise ExportFormatError(f"{entry_where}, {error}") from error
        labels = region["value"][region["type"]]
        if len(labels) > 1:
            raise ExportFormatError(
                f"{region_where}: {len(labels)} labels {labels} on one region; a COCO object has one "
                "category: keep one label per region"
            )
        score = region.get("score", entry.get("score"))
        if kind == "prediction" and not is_finite_number(score):
            raise ExportFormatError(
                f"{region_where}: score must be a number (on the region or its prediction), got {score!r}"
            )
        extra = {f"ls_{kind}_id": entry.get("id"), "ls_region_id": region.get("id")}
        regions.append(_Region(region, region_where, extra, score if kind == "prediction" else None))
    return regions


def _image_sizes(tasks: list[_Task], folders: ImageFolders) -> dict[Any, tuple[int, int]]:
    sizes: dict[Any, tuple[int, int]] = {}
    unknown = []
    for task in tasks:
        size, first = None, None
        for region in [*task.regions, *task.predicted]:
            own = (region.region["original_width"], region.region["original_height"])
            if size is None:
                size, first = own, region.where
            elif own != size:
                raise ExportFormatError(
                    f"{region.where}: original size {own[0]}x{own[1]} differs from the image's "
                    f"{size[0]}x{size[1]} (from {first})"
                )
        path = folders.path_of(task.reference)
        if path is not None and path.is_file():
            try:
                on_disk = image_size(path)
            except ImageFileError as error:
                raise ExportFormatError(f"{task.where}: {error}") from error
            if size is not None and on_disk != size:
                raise ExportFormatError(
                    f"{first}: original size {size[0]}x{size[1]} differs from the image file's "
                    f"{on_disk[0]}x{on_disk[1]} ({path})"
                )
            size = on_disk
        if size is None:
            unknown.append(task.id)
        else:
            sizes[task.id] = size
    if unknown:
        raise ExportFormatError(
            f"image size unknown for tasks {unknown} (no regions, and no image file found): pass "
            "--document-root and/or --media-root so that their files can be read"
        )
    return sizes


def _add_region(builder: CocoBuilder, image_id: int, item: _Region, encoding: str) -> None:
    region = item.region
    (label,) = region["value"][region["type"]]
    try:
        mask = region_to_mask(region)
    except InvalidRegionError as error:
        raise ExportFormatError(f"{item.where.rsplit(', region', 1)[0]}, {error}") from error
    if not mask.any():
        raise ExportFormatError(
            f"{item.where}: covers no pixel centre, so COCO would get an empty object: redraw or delete it"
        )
    options = {"score": item.score, "extra": item.extra}
    try:
        if region["type"] == BRUSH:
            builder.add_mask(image_id, label, mask, encoding=encoding, **options)
        else:
            ring = polygon_pixels(region) if region["type"] == POLYGON else rectangle_pixels(region)
            polygon_encoding = "rle" if encoding == "rle" else "polygon"
            builder.add_polygons(
                image_id, label, [ring], encoding=polygon_encoding, box=region["type"] == RECTANGLE, **options
            )
    except CocoError as error:
        raise ExportFormatError(f"{item.where}: {error}") from error

