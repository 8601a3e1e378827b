"""Label pooling and labelling off the square (issue 18): non-square images, exact thresholds, straight borders.

The feature grid is 2 rows by 4 columns over a 20 x 40 image (10 x 10 pixels per cell) and each cell's
feature is its own (row, column), so a pooled embedding says exactly which cells it averaged, and a swap
of rows and columns or of width and height shows at once.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters.labelstudio import brush_region
from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings
from segmentor.labelling import (
    LabelClassifier,
    LabelExample,
    RegionLabelError,
    examples_from_regions,
    label_segments,
    merge_same_label,
    pool_features,
    segment_embeddings,
)

HEIGHT, WIDTH = 20, 40
GRID = np.stack(np.meshgrid(np.arange(2.0), np.arange(4.0), indexing="ij"), axis=-1).astype(np.float32)  # (2, 4, 2)


def rectangle(x: float, y: float, width: float, height: float, label: str = "Cat") -> dict:
    return {
        "id": f"r{x}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": WIDTH, "original_height": HEIGHT,
        "value": {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": [label]},
    }


def test_pooling_on_a_wide_image_averages_the_cells_under_the_mask() -> None:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[:, 30:] = True  # the last column of cells, both rows
    np.testing.assert_allclose(pool_features(GRID, mask), [0.5, 3.0])
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[:10, :] = True  # the first row of cells, all four columns
    np.testing.assert_allclose(pool_features(GRID, mask), [0.0, 1.5])
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:, 5:15] = True  # half of cell (1, 0) and half of cell (1, 1)
    np.testing.assert_allclose(pool_features(GRID, mask), [1.0, 0.5])


def test_pooling_on_a_tall_image_averages_the_cells_under_the_mask() -> None:
    tall_grid = np.transpose(GRID, (1, 0, 2))[..., ::-1].copy()  # (4, 2): each cell holds (row, column) again
    mask = np.zeros((WIDTH, HEIGHT), bool)
    mask[30:, :] = True  # the last row of cells
    np.testing.assert_allclose(pool_features(tall_grid, mask), [3.0, 0.5])


def test_a_speck_on_a_wide_image_takes_the_cell_under_its_centre() -> None:
    grid = np.zeros((3, 7, 2), np.float32)
    grid[..., 0], grid[..., 1] = np.arange(3.0)[:, None], np.arange(7.0)[None, :]
    mask = np.zeros((300, 700), bool)
    mask[250, 650] = True  # one pixel of 10 000 in its cell: INTER_AREA may round it away
    np.testing.assert_allclose(pool_features(grid, mask), [2.0, 6.0])


def test_segment_embeddings_of_a_wide_label_map() -> None:
    label_map = np.zeros((HEIGHT, WIDTH), np.int32)
    label_map[:, 20:] = 1
    label_map[10:, 30:] = 2
    embeddings = segment_embeddings(GRID, label_map)
    np.testing.assert_allclose(embeddings[0], [0.5, 0.5])
    np.testing.assert_allclose(embeddings[1], [1 / 3, 2 + 1 / 3])  # cells (0, 2), (0, 3), (1, 2)
    np.testing.assert_allclose(embeddings[2], [1.0, 3.0])


def test_an_example_from_a_wide_image_pools_the_cells_its_region_covers() -> None:
    [example] = examples_from_regions([rectangle(75.0, 0.0, 25.0, 100.0)], GRID, {"label": ["Cat"]}, (HEIGHT, WIDTH))
    np.testing.assert_allclose(example.embedding, [0.5, 3.0])
    assert example.area == 10 * HEIGHT or example.area == 11 * HEIGHT  # the rasterised 25 % of 40 columns
    brush = brush_region(np.pad(np.ones((10, 10), bool), ((10, 0), (0, 30))), label="Cat", from_name="label",
                         to_name="image", region_id="b")
    [example] = examples_from_regions([brush], GRID, {"label": ["Cat"]}, (HEIGHT, WIDTH))
    np.testing.assert_allclose(example.embedding, [1.0, 0.0])
    assert example.area == 100


def test_a_region_drawn_on_the_transposed_size_is_refused() -> None:
    region = rectangle(0.0, 0.0, 50.0, 50.0) | {"original_width": HEIGHT, "original_height": WIDTH}
    with pytest.raises(RegionLabelError, match=r"drawn on a 20x40 image, but the task's image is 40x20"):
        examples_from_regions([region], GRID, {"label": ["Cat"]}, (HEIGHT, WIDTH))


def test_a_confidence_exactly_at_the_threshold_takes_the_label() -> None:
    # One label learnt: every guess has confidence exactly 1.0, so a threshold of 1.0 is met, not missed.
    classifier = LabelClassifier([LabelExample("a", "label", "Cat", np.array([1.0, 0.0], np.float32), 4)])
    labelled = label_segments(classifier, {0: np.array([0.2, 1.0], np.float32)}, ["Cat"], "Other", threshold=1.0)
    assert labelled[0].label == "Cat" and labelled[0].confidence == 1.0


def test_a_confidence_just_under_the_threshold_keeps_the_default() -> None:
    examples = [
        LabelExample("a", "label", "Cat", np.array([1.0, 0.0], np.float32), 4),
        LabelExample("b", "label", "Dog", np.array([0.0, 1.0], np.float32), 4),
    ]
    classifier = LabelClassifier(examples)
    query = {0: np.array([1.0, 0.05], np.float32)}
    [guess] = classifier.predict(np.stack(list(query.values())))
    at = label_segments(classifier, query, ["Cat", "Dog"], "Other", threshold=guess.confidence)
    just_above = float(np.nextafter(guess.confidence, 2))
    above = label_segments(classifier, query, ["Cat", "Dog"], "Other", threshold=just_above)
    assert (at[0].label, above[0].label) == ("Cat", "Other")
    assert at[0].confidence == above[0].confidence == guess.confidence


def test_same_label_segments_touching_along_a_straight_border_merge_and_corners_do_not() -> None:
    # 0 | 1 side by side over 2 | 3: 0 and 1 share a vertical border, 0 and 2 a horizontal one, 0 and 3
    # only a corner.
    label_map = np.block([[np.full((4, 9), 0), np.full((4, 5), 1)], [np.full((6, 9), 2), np.full((6, 5), 3)]])
    merged, members = merge_same_label(label_map.astype(np.int32), {0: "Cat", 1: "Cat", 2: "Dog", 3: "Dog"})
    assert members == {0: [0, 1], 2: [2, 3]}
    merged, members = merge_same_label(label_map.astype(np.int32), {0: "Cat", 1: "Dog", 2: "Cat", 3: "Dog"})
    assert members == {0: [0, 2], 1: [1, 3]}
    merged, members = merge_same_label(label_map.astype(np.int32), {0: "Cat", 1: "Dog", 2: "Dog", 3: "Cat"})
    assert members == {0: [0], 1: [1], 2: [2], 3: [3]}  # 1 and 2 meet only at the corner too: nothing merges
    assert (merged == label_map).all()


@pytest.mark.parametrize(("text", "threshold"), [("0", 0.0), ("1", 1.0), ("0.5", 0.5)])
def test_emerdiff_threshold_accepts_both_ends_of_its_range(text: str, threshold: float) -> None:
    [target] = ProjectConfig.parse(_config(f' emerdiff-threshold="{text}"'), Settings()).targets
    assert target.threshold == threshold


@pytest.mark.parametrize("text", ["1.0001", "-0.0001", "2"])
def test_emerdiff_threshold_outside_its_range_is_refused(text: str) -> None:
    with pytest.raises(ProjectConfigError, match="emerdiff-threshold"):
        ProjectConfig.parse(_config(f' emerdiff-threshold="{text}"'), Settings())


def _config(attributes: str) -> str:
    return (f'<View><Image name="image" value="$image"/><PolygonLabels name="label" toName="image"{attributes}>'
            '<Label value="Cat"/><Label value="Dog"/></PolygonLabels></View>')
