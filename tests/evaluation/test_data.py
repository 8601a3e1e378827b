"""Label maps, dataset layouts and label mappings as read from disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segmentor.evaluation.data import (
    CITYSCAPES19,
    CITYSCAPES19_CLASSES,
    COCOSTUFF27,
    COCOSTUFF27_CLASSES,
    LAYOUTS,
    folder_samples,
    pair_by_stem,
    read_label_map,
    read_stem_list,
    scene_samples,
)
from segmentor.evaluation.metrics import EvaluationError


def test_cocostuff27_maps_all_182_stuffthingmap_ids_onto_the_27_classes():
    assert sorted(COCOSTUFF27) == list(range(182))
    assert sorted(set(COCOSTUFF27.values())) == list(range(27))
    named = {fine: COCOSTUFF27_CLASSES[coarse] for fine, coarse in COCOSTUFF27.items()}
    # Spot checks against COCO-Stuff's label list (id = category id - 1).
    assert (named[0], named[2], named[156], named[105], named[170], named[176], named[181]) == (
        "person", "vehicle", "sky", "sky", "wall", "wall", "solid")
    assert len(COCOSTUFF27_CLASSES) == 27


def test_cityscapes_maps_label_ids_to_the_19_train_ids():
    assert sorted(CITYSCAPES19.values()) == list(range(19))
    named = {label_id: CITYSCAPES19_CLASSES[train_id] for label_id, train_id in CITYSCAPES19.items()}
    assert (named[7], named[23], named[26], named[33]) == ("road", "sky", "car", "bicycle")
    for void in (0, 1, 4, 6, 9, 14, 29, 30):  # unlabeled, ego vehicle, static, ground, parking, guard rail, ...
        assert void not in CITYSCAPES19


def test_cityscapes_layout_pairs_images_and_maps_labels(cityscapes_dataset):
    keys, samples = folder_samples(cityscapes_dataset.images, cityscapes_dataset.gt, LAYOUTS["cityscapes"], 255)
    assert keys == sorted(cityscapes_dataset.expected)
    for sample in samples:
        np.testing.assert_array_equal(sample.gt, cityscapes_dataset.expected[sample.name])
        assert sample.image.shape == (64, 64, 3)


def test_cocostuff_layout_pairs_images_and_maps_labels(cocostuff_dataset):
    keys, samples = folder_samples(cocostuff_dataset.images, cocostuff_dataset.gt, LAYOUTS["cocostuff27"], 255,
                                   limit=1)
    assert keys == sorted(cocostuff_dataset.expected)[:1]
    loaded = list(samples)
    assert len(loaded) == 1
    np.testing.assert_array_equal(loaded[0].gt, cocostuff_dataset.expected[keys[0]])


def test_stem_list_selects_images_and_rejects_unknown_stems(cocostuff_dataset, tmp_path):
    wanted = sorted(cocostuff_dataset.expected)[1]
    listed = tmp_path / "stems.txt"
    listed.write_text(f"# curated subset\n{wanted}\n\n")
    keys, _ = folder_samples(cocostuff_dataset.images, cocostuff_dataset.gt, LAYOUTS["cocostuff27"], 255,
                             stems=read_stem_list(listed))
    assert keys == [wanted]
    with pytest.raises(EvaluationError, match="no image in"):
        folder_samples(cocostuff_dataset.images, cocostuff_dataset.gt, LAYOUTS["cocostuff27"], 255,
                       stems=["000000999999"])


def test_image_without_label_is_named_in_the_error(cocostuff_dataset):
    missing = sorted(cocostuff_dataset.gt.glob("*.png"))[0]
    missing.unlink()
    with pytest.raises(EvaluationError, match=missing.stem):
        folder_samples(cocostuff_dataset.images, cocostuff_dataset.gt, LAYOUTS["cocostuff27"], 255)


def test_label_of_another_size_is_named_in_the_error(cocostuff_dataset):
    label = sorted(cocostuff_dataset.gt.glob("*.png"))[0]
    cv2.imwrite(str(label), np.zeros((32, 64), np.uint8))
    _, samples = folder_samples(cocostuff_dataset.images, cocostuff_dataset.gt, LAYOUTS["cocostuff27"], 255)
    with pytest.raises(EvaluationError, match=f"{label.name}.*64x32"):
        list(samples)


def test_raw_ids_outside_a_dataset_are_rejected(cityscapes_dataset):
    label = sorted(cityscapes_dataset.gt.rglob("*_labelIds.png"))[0]
    cv2.imwrite(str(label), np.full((64, 64), 300, np.uint16))
    _, samples = folder_samples(cityscapes_dataset.images, cityscapes_dataset.gt, LAYOUTS["cityscapes"], 255)
    with pytest.raises(EvaluationError, match="not cityscapes ids"):
        list(samples)


def test_missing_folders_and_empty_layouts_are_errors(tmp_path):
    with pytest.raises(EvaluationError, match="does not exist"):
        folder_samples(tmp_path / "nowhere", tmp_path, LAYOUTS["folder"], 255)
    with pytest.raises(EvaluationError, match=r"_leftImg8bit\.png"):
        folder_samples(tmp_path, tmp_path, LAYOUTS["cityscapes"], 255)


def test_label_maps_read_8_bit_16_bit_and_palette_pngs(tmp_path: Path):
    ids = np.array([[0, 1000], [40000, 7]], np.uint16)
    cv2.imwrite(str(tmp_path / "wide.png"), ids)
    np.testing.assert_array_equal(read_label_map(tmp_path / "wide.png"), ids)
    palette = Image.fromarray(np.array([[0, 3], [3, 9]], np.uint8), mode="L").convert("P")
    palette.save(tmp_path / "palette.png")
    assert read_label_map(tmp_path / "palette.png").shape == (2, 2)
    assert len(np.unique(read_label_map(tmp_path / "palette.png"))) == 3


def test_colour_and_corrupt_label_maps_are_rejected(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "colour.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(EvaluationError, match=r"colour\.png.*single-channel"):
        read_label_map(tmp_path / "colour.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EvaluationError, match=r"broken\.png"):
        read_label_map(tmp_path / "broken.png")


def test_pairing_by_stem_names_missing_and_extra_stems(tmp_path: Path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for folder, stems in ((pred, ("a", "b", "extra")), (gt, ("a", "b", "lost"))):
        for stem in stems:
            cv2.imwrite(str(folder / f"{stem}.png"), np.zeros((2, 2), np.uint8))
    with pytest.raises(EvaluationError, match=r"1 in predictions .* only: extra; 1 in ground truth .* only: lost"):
        pair_by_stem(pred, gt)
    (pred / "extra.png").unlink()
    (gt / "lost.png").unlink()
    assert [stem for stem, _, _ in pair_by_stem(pred, gt)] == ["a", "b"]


def test_scene_samples_carry_class_and_instance_maps():
    first, second = scene_samples(2, seed=5, size=32)
    assert (first.name, second.name) == ("scene_0000005", "scene_0000006")
    assert first.gt.shape == first.instance_gt.shape == (32, 32)
    assert first.instance_gt.max() >= 1
