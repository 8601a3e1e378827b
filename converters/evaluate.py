"""COCOeval of a detections list against a COCO dataset: segm and bbox AP, pycocotools' own numbers."""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from converters.coco import CocoError, decode_rle
from converters.values import is_finite_number, is_int

IOU_TYPES = ("segm", "bbox")


class EvaluationInputError(ValueError):
    """A dataset or detections list COCOeval cannot use; the message names the first bad entry."""


@dataclass(frozen=True)
class Evaluation:
    iou_type: str
    stats: list[float]  # COCOeval.stats: AP, AP50, AP75, AP small/medium/large, AR 1/10/100, AR s/m/l
    summary: str  # COCOeval.summarize()'s table

    @property
    def ap(self) -> float:
        return self.stats[0]


def evaluate(dataset: Any, results: Any) -> list[Evaluation]:
    """COCOeval of ``results`` (``COCO.loadRes`` format) on ``dataset``: segm (when every detection has a
    ``segmentation``), then bbox."""
    ground_truth, sizes = _ground_truth(dataset)
    _check_results(results, ground_truth, sizes)
    evaluations = []
    for iou_type in IOU_TYPES:
        if iou_type == "segm" and not all("segmentation" in r for r in results):
            continue
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            # loadRes fills in ids and areas in place: give it copies.
            detections = ground_truth.loadRes([dict(r) for r in results])
            evaluation = COCOeval(ground_truth, detections, iouType=iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            evaluation.summarize()
        evaluations.append(Evaluation(iou_type, [float(v) for v in evaluation.stats], printed.getvalue()))
    return evaluations


def _ground_truth(dataset: Any) -> tuple[COCO, dict[int, tuple[int, int]]]:
    if not isinstance(dataset, dict):
        raise EvaluationInputError(f"the dataset must be a JSON object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise EvaluationInputError(f"the dataset has no '{key}' list")
    sizes = _check_dataset(dataset)
    coco = COCO()
    # COCOeval rewrites the ground truth's segmentations in place (polygons become RLE with bytes counts):
    # the caller's dataset must come back as it was given.
    coco.dataset = copy.deepcopy(dataset)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as error:
        raise EvaluationInputError(f"the dataset is not COCO: an entry lacks {error}") from error
    return coco, sizes


def _check_dataset(dataset: dict) -> dict[int, tuple[int, int]]:
    """Every field COCOeval reads, of the right kind (it would raise deep inside, or score junk);
    returns image id → (width, height)."""
    sizes: dict[int, tuple[int, int]] = {}
    for index, image in enumerate(dataset["images"]):
        if not (isinstance(image, dict) and is_int(image.get("id"))):
            raise EvaluationInputError(f"dataset image #{index}: needs an integer 'id'")
        width, height = image.get("width"), image.get("height")
        if not (is_int(width) and is_int(height) and width > 0 and height > 0):
            raise EvaluationInputError(f"dataset image {image['id']}: width and height must be positive integers")
        sizes[image["id"]] = (width, height)
    categories = set()
    for index, category in enumerate(dataset["categories"]):
        if not (isinstance(category, dict) and is_int(category.get("id"))):
            raise EvaluationInputError(f"dataset category #{index}: needs an integer 'id'")
        categories.add(category["id"])
    for index, annotation in enumerate(dataset["annotations"]):
        where = f"dataset annotation #{index}"
        if not (isinstance(annotation, dict) and is_int(annotation.get("id"))):
            raise EvaluationInputError(f"{where}: needs an integer 'id'")
        _check_reference(annotation, where, sizes, categories)
        if not is_finite_number(annotation.get("area")) or annotation.get("iscrowd", 0) not in (0, 1):
            raise EvaluationInputError(f"{where}: needs a numeric 'area' and 'iscrowd' 0 or 1")
        _check_box(annotation, where)
        _check_segmentation(annotation.get("segmentation"), where, sizes[annotation["image_id"]], polygons=True)
    return sizes


def _check_reference(entry: dict, where: str, sizes: dict, categories: set) -> None:
    image_id, category_id = entry.get("image_id"), entry.get("category_id")
    if not is_int(image_id) or image_id not in sizes:
        raise EvaluationInputError(f"{where}: image_id {image_id!r:.40} is not an image of the dataset")
    if not is_int(category_id) or category_id not in categories:
        raise EvaluationInputError(f"{where}: category_id {category_id!r:.40} is not a category of the dataset")


def _check_box(entry: dict, where: str) -> None:
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        raise EvaluationInputError(f"{where}: bbox must be [x, y, width, height]")


def _check_segmentation(segmentation: Any, where: str, size: tuple[int, int], *, polygons: bool) -> None:
    if polygons and isinstance(segmentation, list):
        for ring in segmentation:
            if not (
                isinstance(ring, list) and len(ring) >= 6 and len(ring) % 2 == 0 and all(map(is_finite_number, ring))
            ):
                raise EvaluationInputError(f"{where}: a polygon must be a list of >= 3 (x, y) pairs of numbers")
        return
    if not (isinstance(segmentation, dict) and "counts" in segmentation):
        kinds = "polygons or COCO RLE" if polygons else "COCO RLE (loadRes reads RLE)"
        raise EvaluationInputError(f"{where}: segmentation must be {kinds}")
    try:
        decode_rle(segmentation, *size)
    except CocoError as error:
        raise EvaluationInputError(f"{where}: {error}") from error


def _check_results(results: Any, ground_truth: COCO, sizes: dict[int, tuple[int, int]]) -> None:
    if not isinstance(results, list):
        raise EvaluationInputError(f"the detections must be a JSON list, got {type(results).__name__}")
    if not results:
        raise EvaluationInputError("the detections list is empty: nothing to evaluate")
    categories = set(ground_truth.getCatIds())
    for index, result in enumerate(results):
        where = f"detection #{index}"
        if not isinstance(result, dict):
            raise EvaluationInputError(f"{where} is not a JSON object")
        _check_reference(result, where, sizes, categories)
        score = result.get("score")
        if not is_finite_number(score):
            raise EvaluationInputError(f"{where}: score must be a number, got {score!r:.40}")
        if result.get("segmentation") is not None:
            _check_segmentation(result["segmentation"], where, sizes[result["image_id"]], polygons=False)
        _check_box(result, where)
