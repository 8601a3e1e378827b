"""/predict with a smart tool's context, through the real app and the tiny model's real segmentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from converters import region_to_mask, regions_from_label_map
from ml_backend.core.label_config import ProjectConfig
from ml_backend.segmentation.granularity import merge_tree
from segmentor.merge_tree import MergeTree
from tests.interactive.support import keypoint, label_config

SCENE = "/data/local-files/?d=scenes/{name}"


@pytest.fixture
def scene(scene_root: Path) -> tuple[str, bytes]:
    (path,) = sorted((scene_root / "scenes").glob("*.png"))
    return SCENE.format(name=path.name), path.read_bytes()


def post(client: FlaskClient, image: str, config: str, context: object = None) -> dict:
    response = client.post(
        "/predict",
        json={
            "tasks": [{"id": 7, "data": {"image": image}}],
            "label_config": config,
            "project": "3.1",
            "params": {"context": context},
        },
    )
    assert response.status_code == 200, response.json
    (result,) = response.json["results"]
    return result


def cached(client: FlaskClient, image_bytes: bytes, config: str):
    """The segmentation the app holds for the image (a cache hit: the app segmented it already)."""
    runtime = client.application.extensions["emerdiff"]
    (target,) = ProjectConfig.parse(config, runtime.settings).targets
    return runtime.segmentation.segment(image_bytes, target.segmentation)


def segmentations_run(client: FlaskClient) -> float:
    return client.application.extensions["emerdiff"].metrics.snapshot().get("segmentor", {}).get("segmentations", 0)


def test_a_click_is_answered_from_the_cached_segmentation(
    make_client: Callable[..., FlaskClient], scene: tuple[str, bytes]
) -> None:
    client, config = make_client(), label_config("brush")
    automatic = post(client, scene[0], config)
    assert automatic["result"] and segmentations_run(client) == 1

    answer = post(client, scene[0], config, {"result": [keypoint(30.0, 60.0, label="Dog")]})
    assert segmentations_run(client) == 1, "the click must not segment again"
    (region,) = answer["result"]
    segmentation = cached(client, scene[1], config)
    height, width = segmentation.label_map.shape
    under = segmentation.label_map[int(0.6 * height), int(0.3 * width)]
    assert np.array_equal(region_to_mask(region), segmentation.label_map == under)
    assert region["value"]["brushlabels"] == ["Dog"] and region["from_name"] == "paint"
    assert answer["score"] == pytest.approx(segmentation.scores[int(under)], rel=1e-6)

    # The same click again climbs the merge tree: the segment and the one it merges with first.
    answer = post(client, scene[0], config, {"result": [keypoint(30.0, 60.0)] * 2})
    tree = merge_tree(segmentation)
    grown = np.isin(segmentation.label_map, tree.leaves(tree.parent(int(under))))
    assert np.array_equal(region_to_mask(answer["result"][0]), grown)


def test_an_uncached_image_is_segmented_by_its_first_click(
    make_client: Callable[..., FlaskClient], scene: tuple[str, bytes]
) -> None:
    client, config = make_client(), label_config("polygon")
    answer = post(client, scene[0], config, {"result": [keypoint(50.0, 50.0)]})
    assert answer["result"] and segmentations_run(client) == 1
    assert {region["type"] for region in answer["result"]} == {"polygonlabels"}


@pytest.mark.parametrize(
    ("context", "reason"),
    [({"result": "click"}, "context: context.result must be a list"),
     ({"result": [keypoint(50.0, 50.0, label="Bird")]}, "context: label 'Bird'")],
)
def test_a_bad_context_gets_an_error_entry(
    make_client: Callable[..., FlaskClient], scene: tuple[str, bytes], context: dict, reason: str
) -> None:
    result = post(make_client(), scene[0], label_config("brush"), context)
    assert "result" not in result and result["error"].startswith(reason)


def test_emerdiff_segments_picks_a_tree_level_without_a_new_segmentation(
    make_client: Callable[..., FlaskClient], scene: tuple[str, bytes]
) -> None:
    client = make_client()
    fine_config, coarse_config = label_config("brush"), label_config("brush", ' emerdiff-segments="2"')
    post(client, scene[0], fine_config)
    coarse = post(client, scene[0], coarse_config)
    assert segmentations_run(client) == 1, "the coarser level comes from the same segmentation"

    segmentation = cached(client, scene[1], fine_config)
    tree = MergeTree(segmentation.merges, int(segmentation.label_map.max()) + 1)
    expected = regions_from_label_map(
        tree.cut(segmentation.label_map, 2), kind="brush", label="Cat", from_name="paint", to_name="image",
        min_area=1,
    )
    assert len(coarse["result"]) == min(2, tree.num_leaves)
    assert sorted(r["value"]["rle"] for r in coarse["result"]) == sorted(r["value"]["rle"] for r in expected)
