"""Builds ``export.json``: a Label Studio 1.23 JSON export of an 80x60 polygon + brush project.

The brush RLE comes from the real SDK (``label_studio_sdk.converter.brush.mask2rle``), exactly as
Label Studio's frontend would store it; polygon points are percent, as Label Studio writes them.
``source_masks()`` gives the pixel masks every region was made from, for the tests to compare with.
Run ``python tests/converters/data/make_export.py`` to rewrite the file (the tests check it is current).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from label_studio_sdk.converter.brush import mask2rle

WIDTH, HEIGHT = 80, 60
EXPORT_PATH = Path(__file__).with_name("export.json")

# Polygons as an annotator clicks them, in percent of the image size.
CAR_POINTS = [[10.0, 15.0], [45.5, 12.25], [50.0, 60.0], [12.5, 55.0]]
PERSON_POINTS = [[60.0, 10.0], [80.0, 20.0], [75.625, 70.0], [58.75, 66.5], [55.0, 40.0]]
CANCELLED_POINTS = [[5.0, 5.0], [30.0, 5.0], [30.0, 30.0]]


def _road_with_hole() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(mask, (40, 42), (30, 12), 0, 0, 360, 1, thickness=-1)
    cv2.ellipse(mask, (40, 42), (10, 4), 0, 0, 360, 0, thickness=-1)
    return mask.astype(bool)


def _sky_band() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[0:14, :] = True
    mask[14:18, 20:60] = True
    return mask


def _prediction_sky() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[0:12, 5:75] = True
    return mask


def source_masks() -> dict[tuple[int, str], np.ndarray]:
    """``(task id, region id)`` → the mask a brush region encodes (polygons: rasterise their points)."""
    return {
        (1, "bR0aD1"): _road_with_hole(),
        (1, "pSky01"): _prediction_sky(),
        (2, "sKy9x2"): _sky_band(),
    }


def _polygon(region_id: str, points: list, label: str, score: float | None = None) -> dict:
    region = {
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": {"points": points, "closed": True, "polygonlabels": [label]},
        "id": region_id,
        "from_name": "poly",
        "to_name": "image",
        "type": "polygonlabels",
        "origin": "manual" if score is None else "prediction",
    }
    if score is not None:
        region["score"] = score
    return region


def _brush(region_id: str, mask: np.ndarray, label: str, score: float | None = None) -> dict:
    region = {
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask2rle(mask.astype(np.uint8) * 255), "brushlabels": [label]},
        "id": region_id,
        "from_name": "brush",
        "to_name": "image",
        "type": "brushlabels",
        "origin": "manual" if score is None else "prediction",
    }
    if score is not None:
        region["score"] = score
    return region


def _annotation(annotation_id: int, task_id: int, result: list, *, cancelled: bool = False) -> dict:
    return {
        "id": annotation_id,
        "completed_by": 1,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2025-11-20T10:15:42.118000Z",
        "updated_at": "2025-11-20T10:16:03.540000Z",
        "draft_created_at": None,
        "lead_time": 21.4,
        "prediction": {},
        "result_count": len(result),
        "unique_id": f"00000000-0000-4000-8000-{annotation_id:012d}",
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "task": task_id,
        "project": 1,
        "updated_by": 1,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def _task(task_id: int, file_name: str, annotations: list, predictions: list) -> dict:
    return {
        "id": task_id,
        "annotations": annotations,
        "file_upload": f"{file_name}",
        "drafts": [],
        "predictions": predictions,
        "data": {"image": f"/data/upload/1/{file_name}"},
        "meta": {},
        "created_at": "2025-11-20T10:10:00.000000Z",
        "updated_at": "2025-11-20T10:16:03.560000Z",
        "inner_id": task_id,
        "total_annotations": sum(not a["was_cancelled"] for a in annotations),
        "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
        "total_predictions": len(predictions),
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 1,
        "updated_by": 1,
        "comment_authors": [],
    }


def build_export() -> list[dict]:
    masks = source_masks()
    choice = {
        "value": {"choices": ["good"]},
        "id": "cH01ce",
        "from_name": "quality",
        "to_name": "image",
        "type": "choices",
        "origin": "manual",
    }
    prediction = {
        "id": 5,
        "model_version": "emerdiff-tiny-k4-0123abcd",
        "created_ago": "2 minutes",
        "result": [
            _polygon("pP3rs0", PERSON_POINTS, "Person", score=0.9),
            _brush("pSky01", masks[(1, "pSky01")], "Sky", score=0.6),
        ],
        "score": 0.73,
        "cluster": None,
        "neighbors": None,
        "mislabeling": 0.0,
        "created_at": "2025-11-20T10:12:00.000000Z",
        "updated_at": "2025-11-20T10:12:00.000000Z",
        "model": None,
        "model_run": None,
        "task": 1,
        "project": 1,
    }
    return [
        _task(
            1,
            "a1b2c3d4-scene.png",
            [
                _annotation(
                    10,
                    1,
                    [
                        _polygon("c4rP0l", CAR_POINTS, "Car"),
                        _brush("bR0aD1", masks[(1, "bR0aD1")], "Road"),
                        choice,
                    ],
                )
            ],
            [prediction],
        ),
        _task(
            2,
            "e5f6a7b8-street.png",
            [
                _annotation(11, 2, [_polygon("xCanc1", CANCELLED_POINTS, "Car")], cancelled=True),
                _annotation(
                    12,
                    2,
                    [
                        _brush("sKy9x2", masks[(2, "sKy9x2")], "Sky"),
                        _polygon("p3rS0n", PERSON_POINTS, "Person"),
                    ],
                ),
            ],
            [],
        ),
        _task(3, "c9d0e1f2-empty.png", [], []),
    ]


if __name__ == "__main__":
    EXPORT_PATH.write_text(json.dumps(build_export(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {EXPORT_PATH}")
