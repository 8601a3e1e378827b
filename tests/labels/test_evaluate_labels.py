"""``evaluate-labels``: ground truth becomes regions, scores add up, the command runs on the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.labelstudio import region_to_mask
from segmentor.__main__ import main
from segmentor.evaluation.labels import SegmentedImage, annotation_regions, evaluate_labels
from segmentor.toy.scenes import COLOUR_CLASS_NAMES, generate_scene

NAMES = ("background", "red", "blue")


def image(seed: int) -> SegmentedImage:
    """A 32x32 image: background, a red square and a blue bar; features = the class of each 4x4 cell."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((32, 32), np.int64)
    top, left = rng.integers(0, 12, 2)
    gt[top:top + 12, left:left + 12] = 1
    gt[28:, :] = 2
    gt[0, 0] = 255  # an ignored pixel
    cells = gt.reshape(8, 4, 8, 4).transpose(0, 2, 1, 3).reshape(8, 8, 16)
    majority = np.array([[np.bincount(c[c < 3], minlength=3).argmax() for c in row] for row in cells])
    features = np.eye(3, dtype=np.float32)[majority] + 0.01
    segments = np.where(gt == 255, 0, gt).astype(np.int32)  # a perfect segmentation
    return SegmentedImage(f"s{seed}", np.zeros((32, 32, 3), np.uint8), gt, segments, features)


def test_ground_truth_becomes_one_region_per_piece() -> None:
    gt = generate_scene(5, 64, classes="colour").class_map
    regions = annotation_regions(gt, COLOUR_CLASS_NAMES, ignore=255)
    painted = np.full(gt.shape, -1)
    for region in regions:
        painted[region_to_mask(region)] = COLOUR_CLASS_NAMES.index(region["value"]["brushlabels"][0])
    np.testing.assert_array_equal(painted, gt)


def test_perfect_features_reach_the_ceiling() -> None:
    images = [image(seed) for seed in range(6)]
    report = evaluate_labels(images[:3], images[3:], NAMES, counts=(1, 3), ignore=255)
    assert report["ceiling"]["pixel_accuracy"] == 1.0
    for run in report["runs"]:
        for method in ("knn", "prototype"):
            assert run[method]["pixel_accuracy"] == pytest.approx(1.0)
            assert run[method]["region_accuracy"] == 1.0
            assert run[method]["per_class_recall"] == {"background": 1.0, "red": 1.0, "blue": 1.0}
        background_share = run["majority_class"]["pixel_accuracy"]
        assert run["majority_class"]["per_class_recall"] == {"background": 1.0, "red": 0.0, "blue": 0.0}
        assert run["majority_class"]["class_mean_accuracy"] == pytest.approx(1 / 3)
        assert 0.5 < background_share < 1.0


@pytest.mark.slow
def test_the_command_on_the_bundled_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.json"
    status = main(["evaluate-labels", "--model", "bundled", "--scenes", "1", "--counts", "1,2", "--k", "3",
                   "--scene-classes", "colour", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["classes"] == list(COLOUR_CLASS_NAMES) and report["test_images"] == 1
    assert [run["annotated_images"] for run in report["runs"]] == [1, 2]
    assert "| 2 |" in capsys.readouterr().out
