"""Small datasets written the way users have COCO-Stuff and Cityscapes on disk, from generated scenes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from segmentor.toy.scenes import generate_scene

SCENE_SEEDS = (3, 4)
# Scene classes (background, disc, box, triangle, ring, ellipse) written as raw dataset ids, and the class
# ids those raw ids must come back as: Cityscapes labelIds -> trainIds, COCO-Stuff ids -> COCO-Stuff-27.
CITYSCAPES_RAW = np.array([23, 26, 24, 21, 11, 7])  # sky, car, person, vegetation, building, road
CITYSCAPES_TRAIN = np.array([10, 13, 11, 8, 2, 0])
COCOSTUFF_RAW = np.array([156, 2, 0, 123, 95, 170])  # sky-other, car, person, plant, building, wall
COCOSTUFF_COARSE = np.array([23, 11, 9, 22, 20, 18])
IGNORE_ROWS = 2  # the top rows are written with an id the mapping drops (Cityscapes "ego vehicle", COCO 255)


@dataclass(frozen=True)
class DatasetFixture:
    images: Path
    gt: Path
    expected: dict[str, np.ndarray]  # key -> class ids the loader must produce (255 = ignore)


def _expected(class_map: np.ndarray, classes: np.ndarray) -> np.ndarray:
    expected = classes[class_map]
    expected[:IGNORE_ROWS] = 255
    return expected


@pytest.fixture
def cityscapes_dataset(tmp_path: Path) -> DatasetFixture:
    images, gt = tmp_path / "leftImg8bit" / "val", tmp_path / "gtFine" / "val"
    expected = {}
    for index, seed in enumerate(SCENE_SEEDS):
        city = ("aachen", "bonn")[index]
        key = f"{city}_000000_{seed:06d}"
        scene = generate_scene(seed)
        (images / city).mkdir(parents=True)
        (gt / city).mkdir(parents=True)
        cv2.imwrite(str(images / city / f"{key}_leftImg8bit.png"), scene.image[:, :, ::-1])
        raw = CITYSCAPES_RAW[scene.class_map].astype(np.uint8)
        raw[:IGNORE_ROWS] = 1
        cv2.imwrite(str(gt / city / f"{key}_gtFine_labelIds.png"), raw)
        # Cityscapes ships other maps beside labelIds; the loader must not take them for labels.
        cv2.imwrite(str(gt / city / f"{key}_gtFine_color.png"), scene.image)
        expected[key] = _expected(scene.class_map, CITYSCAPES_TRAIN)
    return DatasetFixture(images, gt, expected)


@pytest.fixture
def cocostuff_dataset(tmp_path: Path) -> DatasetFixture:
    images, gt = tmp_path / "images" / "val2017", tmp_path / "stuffthingmaps" / "val2017"
    images.mkdir(parents=True)
    gt.mkdir(parents=True)
    expected = {}
    for seed in SCENE_SEEDS:
        key = f"{seed:012d}"
        scene = generate_scene(seed)
        cv2.imwrite(str(images / f"{key}.jpg"), scene.image[:, :, ::-1])
        raw = COCOSTUFF_RAW[scene.class_map].astype(np.uint8)
        raw[:IGNORE_ROWS] = 255
        cv2.imwrite(str(gt / f"{key}.png"), raw)
        expected[key] = _expected(scene.class_map, COCOSTUFF_COARSE)
    return DatasetFixture(images, gt, expected)
