"""COCOeval of a detections list against a COCO dataset: segm and bbox AP, pycocotools' own numbers."""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from dataclasses import dataclass
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

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
    ground_truth = _ground_truth(dataset)
    _check_results(results, ground_truth)
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


def _ground_truth(dataset: Any) -> COCO:
    if not isinstance(dataset, dict):
        raise EvaluationInputError(f"the dataset must be a JSON object, got {type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise EvaluationInputError(f"the dataset has no '{key}' list")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as error:
        raise EvaluationInputError(f"the dataset is not COCO: an entry lacks {error}") from error
    return coco


def _check_results(results: Any, ground_truth: COCO) -> None:
    if not isinstance(results, list):
        raise EvaluationInputError(f"the detections must be a JSON list, got {type(results).__name__}")
    if not results:
        raise EvaluationInputError("the detections list is empty: nothing to evaluate")
    images, categories = set(ground_truth.getImgIds()), set(ground_truth.getCatIds())
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise EvaluationInputError(f"detection #{index} is not a JSON object")
        if result.get("image_id") not in images:
            raise EvaluationInputError(
                f"detection #{index}: image_id {result.get('image_id')!r} is not an image of the dataset"
            )
        if result.get("category_id") not in categories:
            raise EvaluationInputError(
                f"detection #{index}: category_id {result.get('category_id')!r} is not a category of the dataset"
            )
        score = result.get("score")
        if not (isinstance(score, numbers.Real) and not isinstance(score, bool) and math.isfinite(score)):
            raise EvaluationInputError(f"detection #{index}: score must be a number, got {score!r}")
        segmentation = result.get("segmentation")
        if segmentation is not None and not (isinstance(segmentation, dict) and "counts" in segmentation):
            raise EvaluationInputError(f"detection #{index}: segmentation must be COCO RLE (loadRes reads RLE)")
        if not isinstance(result.get("bbox"), list) or len(result["bbox"]) != 4:
            raise EvaluationInputError(f"detection #{index}: bbox must be [x, y, width, height]")
