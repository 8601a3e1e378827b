"""The zero-shot point of ``evaluate-labels``: per mode, per-pixel CLIP vs the grid pooled in each segmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segmentor.__main__ import main
from segmentor.evaluation.labels import SegmentedImage, load_segmented, save_segmented
from segmentor.evaluation.metrics import EvaluationError
from segmentor.evaluation.zero_shot import KINDS, read_class_words, zero_shot_report
from segmentor.toy.clip_architecture import TINY_CLIP_TEST_SPEC, build_clip, build_clip_tokenizer, save_clip_folder
from segmentor.toy.scenes import COLOUR_CLASS_NAMES, generate_scene
from segmentor.zeroshot import BUNDLED_CLIP_DIR, MODES, TEMPLATES, load_clip

COLOUR_WORDS = {name: (name,) for name in COLOUR_CLASS_NAMES}


def scene_image(seed: int) -> SegmentedImage:
    """A colour scene whose EmerDiff segments are its objects (perfect) and whose 'bilinear' segments are one."""
    scene = generate_scene(seed, 64, classes="colour")
    whole = np.zeros(scene.class_map.shape, np.int32)
    return SegmentedImage(f"scene{seed}", scene.image, scene.class_map.astype(np.int64),
                          scene.instance_map.astype(np.int32), np.zeros((8, 8, 4), np.float32), whole)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    tokenizer = build_clip_tokenizer(TINY_CLIP_TEST_SPEC)
    save_clip_folder(build_clip(TINY_CLIP_TEST_SPEC, tokenizer), tokenizer, TINY_CLIP_TEST_SPEC, folder)
    return load_clip(str(folder), device="cpu", dtype="float32")


def test_every_mode_scores_three_labellings(tiny_clip) -> None:
    report = zero_shot_report([scene_image(901)], COLOUR_WORDS, tiny_clip, MODES, ("{}",), 255)
    assert list(report["modes"]) == list(MODES)
    for scores in report["modes"].values():
        for kind in KINDS:
            assert 0.0 <= scores[kind]["class_mean_accuracy"] <= 1.0
            assert set(scores[kind]["per_class_recall"]) == set(COLOUR_CLASS_NAMES)
        # One 'bilinear' segment over the whole image: every pixel gets the same class.
        recalls = [v for v in scores["bilinear_segments"]["per_class_recall"].values() if v is not None]
        assert set(recalls) <= {0.0, 1.0} and sum(recalls) <= 1.0


def test_missing_baseline_segments_are_a_clear_error(tiny_clip) -> None:
    image = scene_image(900)
    old = SegmentedImage(image.name, image.image, image.gt, image.label_map, image.features)
    with pytest.raises(EvaluationError, match="bilinear baseline's segments are missing"):
        zero_shot_report([old], COLOUR_WORDS, tiny_clip, ("maskclip",), ("{}",), 255)


def test_class_name_file(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("# ADE-style\nwall\nperson: person, people\n\ncar: car, automobile\n")
    assert read_class_words(path) == {"wall": ("wall",), "person": ("person", "people"), "car": ("car", "automobile")}
    path.write_text("wall\nwall: partition\n")
    with pytest.raises(EvaluationError, match=r"names.txt:2: empty or repeated class name 'wall'"):
        read_class_words(path)


def test_unknown_mode_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["evaluate-labels", "--scenes", "1", "--counts", "1", "--scene-classes", "colour", "--device", "cpu",
                   "--clip", "bundled", "--clip-modes", "maskclip,gradcam", "--out", str(tmp_path / "r.json")])
    assert status == 2
    assert "--clip-modes: unknown gradcam" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED_CLIP_DIR / "config.json").is_file(), reason="bundled CLIP not trained")
def test_bundled_clip_labels_pooled_segments_better_than_one_segment() -> None:
    """The comparison pools in the segmentation it names: perfect object segments beat one whole-image
    segment (which can be right for one class at most), and the object segments are mostly right."""
    clip = load_clip("bundled", device="cpu", dtype="float32")
    images = [scene_image(seed) for seed in range(900, 916)]
    scores = zero_shot_report(images, COLOUR_WORDS, clip, ("maskclip",), TEMPLATES, 255)["modes"]["maskclip"]
    assert scores["bilinear_segments"]["class_mean_accuracy"] <= 0.5
    assert scores["emerdiff_segments"]["class_mean_accuracy"] >= 0.8


def test_saved_segmentations_keep_the_baseline_segments(tmp_path: Path) -> None:
    images = [scene_image(900), scene_image(901)]
    save_segmented(tmp_path / "segmented.npz", images)
    loaded = load_segmented(tmp_path / "segmented.npz")
    for before, after in zip(images, loaded, strict=True):
        np.testing.assert_array_equal(after.baseline_map, before.baseline_map)
        np.testing.assert_array_equal(after.label_map, before.label_map)


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLED_CLIP_DIR / "config.json").is_file(), reason="bundled CLIP not trained")
def test_the_command_adds_the_zero_shot_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "labels.json"
    status = main(["evaluate-labels", "--scenes", "1", "--counts", "1", "--k", "3", "--scene-classes", "colour",
                   "--device", "cpu", "--no-progress", "--clip", "bundled", "--clip-modes", "maskclip,sclip",
                   "--segmentations", str(tmp_path / "seg.npz"), "--out", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert list(report["zero_shot"]["modes"]) == ["maskclip", "sclip"]
    assert set(KINDS) <= set(report["zero_shot"]["modes"]["sclip"])
    assert "| 0 | 0 | zero-shot sclip: emerdiff segments |" in capsys.readouterr().out
    # Re-read segmentations keep the baseline's segments: the comparison runs again without segmenting.
    assert main(["evaluate-labels", "--scenes", "1", "--counts", "1", "--k", "3", "--scene-classes", "colour",
                 "--device", "cpu", "--no-progress", "--clip", "bundled", "--clip-modes", "sclip",
                 "--segmentations", str(tmp_path / "seg.npz"), "--out", str(out)]) == 0
    first, again = report["zero_shot"]["modes"]["sclip"], json.loads(out.read_text())["zero_shot"]["modes"]["sclip"]
    assert {kind: again[kind] for kind in KINDS} == {kind: first[kind] for kind in KINDS}
