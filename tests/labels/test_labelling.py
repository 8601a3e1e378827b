"""The pure parts of label learning: pooling under regions, the classifier, thresholds, merging neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from converters.labelstudio import brush_region, polygon_regions
from segmentor.labelling import (
    LabelClassifier,
    LabelExample,
    LabelGuess,
    RegionLabelError,
    examples_from_regions,
    label_segments,
    merge_same_label,
    pool_features,
    segment_embeddings,
)

# A 4x4 feature grid over a 40x40 image: each cell (10x10 pixels) holds its own one-hot feature.
GRID = np.eye(16, dtype=np.float32).reshape(4, 4, 16)


def test_pooling_weights_cells_by_the_area_the_mask_covers() -> None:
    mask = np.zeros((40, 40), bool)
    mask[0:10, 0:20] = True  # cells (0,0) and (0,1) whole
    mask[10:15, 0:10] = True  # half of cell (1,0)
    pooled = pool_features(GRID, mask)
    np.testing.assert_allclose(pooled[[0, 1, 4]], np.array([100, 100, 50]) / 250, rtol=1e-5)
    assert pooled.sum() == pytest.approx(1.0)
    assert pool_features(GRID, np.zeros((40, 40), bool)) is None


def test_a_speck_takes_the_cell_under_it() -> None:
    grid = np.random.default_rng(0).normal(size=(4, 4, 3)).astype(np.float32)
    mask = np.zeros((400, 400), bool)
    mask[250, 350] = True  # 1 pixel of 10,000 per cell: INTER_AREA may round it away
    np.testing.assert_allclose(pool_features(grid, mask), grid[2, 3], rtol=1e-2, atol=1e-3)


def test_segment_embeddings_pool_each_segment() -> None:
    label_map = np.zeros((40, 40), np.int32)
    label_map[:, 20:] = 1
    embeddings = segment_embeddings(GRID, label_map)
    assert sorted(embeddings) == [0, 1]
    assert embeddings[0][[0, 1, 4, 5]].sum() == pytest.approx(0.5)
    assert embeddings[1][[2, 3]].sum() == pytest.approx(0.25)  # 2 of its 8 cells


def _regions() -> list[dict]:
    left = np.zeros((40, 40), np.uint8)
    left[:, :20] = 1
    polygon = polygon_regions([np.array([[20, 0], [40, 0], [40, 40], [20, 40]])], width=40, height=40,
                              label="Dog", from_name="poly", to_name="image")[0]
    brush = brush_region(left, label="Cat", from_name="brush", to_name="image", region_id="b1")
    rectangle = {"id": "r1", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
                 "original_width": 40, "original_height": 40, "image_rotation": 0,
                 "value": {"x": 0, "y": 0, "width": 25, "height": 25, "rotation": 0, "rectanglelabels": ["Cat"]}}
    choice = {"id": "c1", "from_name": "mood", "to_name": "image", "type": "choices", "value": {"choices": ["x"]}}
    return [polygon, brush, rectangle, choice]


LABELS_OF = {"poly": ("Cat", "Dog"), "brush": ("Cat", "Dog"), "box": ("Cat", "Dog")}


def test_examples_from_polygon_brush_and_rectangle_regions() -> None:
    examples = examples_from_regions(_regions(), GRID, LABELS_OF, (40, 40))
    assert [(e.from_name, e.label, e.area) for e in examples] == [("poly", "Dog", 800), ("brush", "Cat", 800),
                                                                   ("box", "Cat", 100)]
    assert examples[2].embedding[0] == pytest.approx(1.0)  # the 10x10 box is cell (0,0) exactly


def test_a_label_not_in_the_control_fails_the_whole_annotation() -> None:
    regions = _regions()
    regions[0]["value"]["polygonlabels"] = ["Cow"]
    with pytest.raises(RegionLabelError, match="'Cow' is not in control 'poly'"):
        examples_from_regions(regions, GRID, LABELS_OF, (40, 40))
    regions[0]["value"]["polygonlabels"] = ["Cat", "Dog"]
    with pytest.raises(RegionLabelError, match="exactly one label"):
        examples_from_regions(regions, GRID, LABELS_OF, (40, 40))
    regions = _regions()
    regions[1]["value"]["rle"] = [0, 0, 1, 2, 3]
    with pytest.raises(RegionLabelError, match="b1"):
        examples_from_regions(regions, GRID, LABELS_OF, (40, 40))
    regions = _regions()
    regions[0]["original_width"] = regions[0]["original_height"] = 10**6  # would be a terabyte mask
    with pytest.raises(RegionLabelError, match="drawn on a 1000000x1000000 image"):
        examples_from_regions(regions, GRID, LABELS_OF, (40, 40))


def _clusters(seed: int = 0) -> tuple[list[LabelExample], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"Cat": rng.normal(size=16), "Dog": rng.normal(size=16), "Cow": rng.normal(size=16)}
    examples = [LabelExample(f"{label}{i}", "poly", label, (centre + 0.1 * rng.normal(size=16)).astype(np.float32), 1)
                for label, centre in centres.items() for i in range(4)]
    queries = np.stack([centre + 0.1 * rng.normal(size=16) for centre in centres.values()])
    return examples, queries, list(centres)


@pytest.mark.parametrize("method", ["prototype", "knn"])
def test_classifier_labels_by_nearest_examples(method: str) -> None:
    examples, queries, truth = _clusters()
    classifier = LabelClassifier(examples, method)
    guesses = classifier.predict(queries)
    assert [guess.label for guess in guesses] == truth
    assert all(0.9 < guess.confidence <= 1.0 for guess in guesses)
    restricted = classifier.predict(queries, allowed=["Cat", "Dog", "Horse"])
    assert [guess.label for guess in restricted][:2] == ["Cat", "Dog"]
    assert restricted[2].label in ("Cat", "Dog")  # a Cow-like segment, but this control has no Cow
    assert classifier.predict(queries, allowed=["Horse"]) == [None, None, None]


def test_knn_prefers_the_example_a_segment_was_annotated_as() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=16)
    own = base + 0.05 * rng.normal(size=16)
    examples = [LabelExample("a", "poly", "Red", own.astype(np.float32), 1)]
    examples += [LabelExample(f"b{i}", "poly", "Blue", (base + 0.3 * rng.normal(size=16)).astype(np.float32), 1)
                 for i in range(4)]
    (guess,) = LabelClassifier(examples, "knn").predict(own[None])
    assert guess.label == "Red"


def test_threshold_keeps_the_default_label_and_the_confidence() -> None:
    cat, dog = np.eye(2, dtype=np.float32)
    classifier = LabelClassifier([LabelExample("a", "poly", "Cat", cat, 1), LabelExample("b", "poly", "Dog", dog, 1)])
    labelled = label_segments(classifier, {0: cat, 1: cat + dog}, ["Cat", "Dog"], "Object", 0.9)
    assert labelled[0].label == "Cat" and labelled[0].confidence > 0.9
    assert labelled[1] == LabelGuess("Object", pytest.approx(0.5))  # a tie between Cat and Dog: unsure


def test_merge_joins_touching_segments_with_the_same_label_only() -> None:
    label_map = np.repeat(np.array([[0, 0, 1, 1, 2, 2, 3, 3]]), 4, axis=0)
    merged, members = merge_same_label(label_map, {0: "Cat", 1: "Cat", 2: "Dog", 3: "Cat"})
    assert members == {0: [0, 1], 2: [2], 3: [3]}  # 3 is a Cat too, but does not touch 0/1
    np.testing.assert_array_equal(merged[0], [0, 0, 0, 0, 2, 2, 3, 3])
