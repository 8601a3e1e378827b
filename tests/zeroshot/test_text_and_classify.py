"""Label embeddings (templates, synonyms) and segment classification (pooling, best word, threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segmentor.labelling import normalise
from segmentor.zeroshot import TEMPLATES, classify_pixels, classify_segments, label_embeddings
from segmentor.zeroshot.classify import label_scores, probabilities
from segmentor.zeroshot.text import word_embeddings


def test_label_embeddings_are_normalised_template_means_one_row_per_word(tiny_clip):
    embeddings = label_embeddings(tiny_clip, {"Car": ["car", "automobile"], "Sky": ["sky"]})
    assert list(embeddings) == ["Car", "Sky"]
    assert embeddings["Car"].shape == (2, 16) and embeddings["Sky"].shape == (1, 16)
    tokens = tiny_clip.tokenizer([t.format("automobile") for t in TEMPLATES], padding=True, return_tensors="pt")
    with torch.inference_mode():
        encoded = tiny_clip.model.get_text_features(**tokens).pooler_output
    expected = normalise(normalise(encoded.numpy()).mean(axis=0))
    np.testing.assert_allclose(embeddings["Car"][1], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings["Car"], axis=1), 1.0, atol=1e-5)


def test_label_embeddings_are_deterministic_and_batch_independent(tiny_clip):
    alone = word_embeddings(tiny_clip, ["sky"])
    together = word_embeddings(tiny_clip, ["car", "sky", "road"])
    np.testing.assert_allclose(alone[0], together[1], atol=1e-5)
    np.testing.assert_array_equal(word_embeddings(tiny_clip, ["sky"]), alone)


def test_templates_must_hold_the_word(tiny_clip):
    with pytest.raises(ValueError, match="template"):
        word_embeddings(tiny_clip, ["car"], ["a photo"])
    with pytest.raises(ValueError, match="no words"):
        label_embeddings(tiny_clip, {"Car": []})


def _planted(rows: int = 6, cols: int = 10, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A grid of background noise close to 'ground' whose top-right patch is 'car'."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    car, automobile, ground = basis[0], basis[1], basis[2]
    grid = normalise(ground + 0.1 * rng.normal(size=(rows, cols, 16)))
    grid[0, cols - 1] = automobile
    return grid.astype(np.float32), {"car": np.stack([car, automobile]), "ground": ground[None]}


def test_a_planted_corner_patch_labels_the_corner_segment_of_a_non_square_image():
    grid, embeddings = _planted()
    label_map = np.zeros((60, 100), np.int32)  # the image is 10x the grid: patch (0, 9) is pixels [0:10, 90:100]
    label_map[:10, 90:] = 7
    label_map[30:, :50] = 3
    labelled = classify_segments(grid, label_map, embeddings, logit_scale=100.0, threshold=0.5, fallback="ground")
    assert {segment: label for segment, (label, _) in labelled.items()} == {0: "ground", 3: "ground", 7: "car"}
    assert labelled[7][1] > 0.99  # 'car' won through its best word ('automobile')
    pixels = classify_pixels(grid, embeddings, logit_scale=100.0)
    assert pixels.shape == grid.shape[:2] and pixels[0, 9] == 0 and (pixels == 0).sum() == 1  # index 0: car


def test_a_segment_exactly_at_the_threshold_keeps_its_label_just_below_falls_back():
    grid, embeddings = _planted()
    label_map = np.zeros((60, 100), np.int32)
    label_map[:10, 80:] = 1  # half car, half ground: an unsure segment
    probability = classify_segments(grid, label_map, embeddings, logit_scale=10.0, threshold=0.0,
                                     fallback=None)[1][1]
    assert 0.5 < probability < 0.99
    at = classify_segments(grid, label_map, embeddings, logit_scale=10.0, threshold=probability, fallback="bg")
    above = classify_segments(grid, label_map, embeddings, logit_scale=10.0,
                              threshold=float(np.nextafter(probability, 1.0)), fallback="bg")
    left_out = classify_segments(grid, label_map, embeddings, logit_scale=10.0, threshold=1.0, fallback=None)
    assert at[1][0] != "bg" and above[1] == ("bg", probability)
    assert left_out == {}


def test_probabilities_follow_the_logit_scale():
    scores = np.array([[0.3, 0.1]])
    np.testing.assert_allclose(probabilities(scores, 10.0)[0, 0], 1 / (1 + np.exp(-2.0)))
    labels, best = label_scores(np.array([[1.0, 0.0]]), {"a": np.array([[0.0, 1.0], [1.0, 0.0]])})
    assert labels == ["a"] and best[0, 0] == pytest.approx(1.0)
