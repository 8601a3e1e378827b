"""The evaluate command: oracle masks, and whole runs on the tiny random model (scenes, Cityscapes, COCO-Stuff).

The tiny model is random, so these runs check the plumbing and the report, not segmentation quality.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from segmentor.evaluation.cli import add_evaluate_arguments, build_config, run_evaluate
from segmentor.evaluation.run import METHODS, PAIRS, oracle_masks

SET_SCORES = ("per_image_miou", "global_miou", "boundary_f1", "pixel_accuracy", "dataset_miou")


def _evaluate(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    return run_evaluate(parser.parse_args([*argv, "--no-progress"]))


def test_oracle_masks_pool_ground_truth_onto_the_grid():
    gt = np.zeros((4, 16), np.int64)
    gt[:, :4] = 255  # cell 0: only ignore-label pixels -> the id of its nearest labelled cell (cell 1)
    gt[0, 4] = 3  # one pixel of id 3: wins no cell and vanishes
    gt[:, 8:] = 5
    gt[:, 12] = 0  # cell 3: one column of 0, three of 5 -> 5
    masks, ids = oracle_masks(gt, (1, 4), ignore=255)
    assert ids.tolist() == [0, 5]
    np.testing.assert_array_equal(masks, [[[True, True, False, False]], [[False, False, True, True]]])


def test_config_overrides_are_typed_by_the_field():
    config = build_config(["modulation_strength=5", "attention_injection=false", "working_size=none",
                           "step_stride=4"], k=3)
    assert (config.modulation_strength, config.attention_injection, config.working_size) == (5.0, False, None)
    assert (config.step_stride, config.num_segments) == (4, 3)


@pytest.mark.parametrize(("argv", "message"), [
    (["--scenes", "2", "--set", "lambda=3"], "expected FIELD=VALUE"),
    (["--scenes", "2", "--set", "step_stride=two"], "not a valid int"),
    (["--scenes", "2", "--set", "blur_sigma=-1"], "blur_sigma must be >= 0"),
    (["--scenes", "0"], "--scenes must be at least 1"),
])
def test_bad_evaluate_arguments_are_reported(tmp_path, capsys, argv, message):
    assert _evaluate("--model", str(tmp_path), *argv, "--out", str(tmp_path / "r.json")) == 2
    assert message in capsys.readouterr().err


def test_images_without_ground_truth_folder_and_missing_models_are_reported(tmp_path, capsys):
    assert _evaluate("--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "r.json")) == 2
    assert "--images needs --gt" in capsys.readouterr().err
    missing = tmp_path / "no-model"
    assert _evaluate("--model", str(missing), "--scenes", "1", "--out", str(tmp_path / "r.json")) == 2
    assert capsys.readouterr().err.startswith("error: ")


def _check_report(report: dict, images: int) -> None:
    assert report["images"] == images
    for method in METHODS:
        for score in SET_SCORES:
            assert 0.0 <= report[method][score] <= 1.0, (method, score)
    for pair in PAIRS:
        for score in ("per_image_miou", "boundary_f1", "pixel_accuracy"):
            paired = report["paired"][pair][score]
            assert -1.0 <= paired["mean"] <= 1.0
            assert paired["sem"] >= 0.0
            assert paired["won"] + paired["tied"] + paired["lost"] == pytest.approx(1.0)
    assert [record["name"] for record in report["per_image"]] == sorted(r["name"] for r in report["per_image"])
    # Bilinearly upsampled ground-truth masks carry their ground-truth ids: most pixels are right even
    # before any matching, whatever the (random) model does.
    assert report["oracle_baseline"]["pixel_accuracy"] > 0.5


@pytest.mark.slow
def test_evaluate_scenes_reports_every_method_and_the_paired_differences(tiny_model_dir, tmp_path):
    out = tmp_path / "report.json"
    assert _evaluate("--model", str(tiny_model_dir), "--scenes", "2", "--seed", "11", "--k", "3",
                     "--set", "step_stride=5", "--out", str(out)) == 0
    report = json.loads(out.read_text())
    _check_report(report, images=2)
    for method in ("emerdiff", "baseline"):
        assert set(report[method]["instance_gt"]) == {"per_image_miou", "boundary_f1", "pixel_accuracy"}
    assert report["config"]["num_segments"] == 3
    assert report["config"]["step_stride"] == 5
    assert report["config"]["source"]["first_seed"] == 11
    assert report["model"] == str(tiny_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cityscapes", "cocostuff27"])
def test_evaluate_reads_dataset_layouts(tiny_model_dir, cityscapes_dataset, cocostuff_dataset, tmp_path, layout):
    dataset = cityscapes_dataset if layout == "cityscapes" else cocostuff_dataset
    out = tmp_path / "report.json"
    assert _evaluate("--model", str(tiny_model_dir), "--images", str(dataset.images), "--gt", str(dataset.gt),
                     "--dataset", layout, "--k", "3", "--set", "step_stride=5", "--out", str(out)) == 0
    report = json.loads(out.read_text())
    _check_report(report, images=2)
    assert "instance_gt" not in report["emerdiff"]
    assert [record["name"] for record in report["per_image"]] == sorted(dataset.expected)
    # k-means over segment embeddings runs to the number of classes the ground truth holds.
    assert report["dataset_clusters"] == len(np.unique(np.concatenate(
        [gt[gt != 255] for gt in dataset.expected.values()])))


def test_oracle_pooling_keeps_cells_of_a_real_scene():
    from segmentor.toy.scenes import generate_scene

    scene = generate_scene(2)
    masks, ids = oracle_masks(scene.class_map, (8, 8), ignore=255)
    assert masks.shape[1:] == (8, 8)
    np.testing.assert_array_equal(masks.sum(axis=0), 1)  # disjoint and covering
    assert set(ids.tolist()) <= set(np.unique(scene.class_map).tolist())
