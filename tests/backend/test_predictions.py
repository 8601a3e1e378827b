"""/predict with the real tiny model, segmentor and converters: regions per control, labels, failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from converters.labelstudio import region_to_mask, validate_regions
from tests.backend.support import BOTH_CONFIG, BRUSH_CONFIG, POLYGON_CONFIG, metrics_of, predict, task

SCENE = "/data/local-files/?d=images/scene0.png"


@pytest.fixture
def client(make_client: Callable[..., FlaskClient], document_root: Path) -> FlaskClient:
    return make_client(local_files_document_root=document_root.resolve())


def labels_of(region: dict) -> list[str]:
    return region["value"][region["type"]]


def test_polygon_config(client: FlaskClient) -> None:
    [prediction] = predict(client, [task(1, SCENE)], POLYGON_CONFIG)
    regions = prediction["result"]
    assert regions and all(region["type"] == "polygonlabels" for region in regions)
    assert {region["from_name"] for region in regions} == {"poly"}
    assert all(labels_of(region) == ["Object"] for region in regions)
    assert all((region["original_width"], region["original_height"]) == (64, 48) for region in regions)
    assert 0.0 < prediction["score"] <= 1.0
    assert (
        prediction["model_version"]
        == client.post("/setup", json={"schema": POLYGON_CONFIG}).json["model_version"]
    )
    validate_regions(regions, POLYGON_CONFIG)


def test_brush_config_covers_the_image_exactly_once(client: FlaskClient) -> None:
    [prediction] = predict(client, [task(1, SCENE)], BRUSH_CONFIG)
    regions = prediction["result"]
    assert regions and all(region["type"] == "brushlabels" for region in regions)
    validate_regions(regions, BRUSH_CONFIG)
    coverage = np.sum([region_to_mask(region) for region in regions], axis=0)
    assert coverage.shape == (48, 64)
    assert np.all(coverage == 1)  # brush regions are the exact segments: a partition of the image
    assert all(0.0 <= region["score"] <= 1.0 for region in regions)


def test_both_controls_get_regions_from_the_same_segmentation(client: FlaskClient) -> None:
    [prediction] = predict(client, [task(1, SCENE)], BOTH_CONFIG)
    regions = prediction["result"]
    validate_regions(regions, BOTH_CONFIG)
    polygons = [region for region in regions if region["from_name"] == "poly"]
    brushes = [region for region in regions if region["from_name"] == "brush"]
    assert polygons and brushes
    assert {label for region in polygons for label in labels_of(region)} == {"Background"}  # emerdiff-label
    assert {label for region in brushes for label in labels_of(region)} == {"Thing"}  # first label
    assert len({region["id"] for region in regions}) == len(regions)
    # One segmentation serves both: each brush segment has polygon pieces cut from it.
    brush_segments = {region["id"].removeprefix("brush-") for region in brushes}
    polygon_segments = {region["id"].removeprefix("poly-").split("-")[0] for region in polygons}
    assert polygon_segments <= brush_segments
    metrics = metrics_of(client)
    assert metrics["cache"].get("hits", 0) + metrics["cache"].get("misses", 0) == 1


def test_environment_default_label(make_client: Callable[..., FlaskClient], document_root: Path) -> None:
    client = make_client(local_files_document_root=document_root.resolve(), default_label="Background")
    [prediction] = predict(client, [task(1, SCENE)], POLYGON_CONFIG)
    assert {label for region in prediction["result"] for label in labels_of(region)} == {"Background"}
    # A default label the control lacks is never emitted: the first label is used instead.
    [prediction] = predict(client, [task(1, SCENE)], BRUSH_CONFIG)
    assert {label for region in prediction["result"] for label in labels_of(region)} == {"Thing"}


def test_per_project_segment_count(client: FlaskClient) -> None:
    config = BRUSH_CONFIG.replace('toName="image"', 'toName="image" emerdiff-segments="2"')
    [prediction] = predict(client, [task(1, SCENE)], config)
    assert 1 <= len(prediction["result"]) <= 2


def test_batch_with_broken_tasks_stays_aligned(client: FlaskClient, document_root: Path) -> None:
    (document_root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    tasks = [
        task(1, SCENE),
        task(2, "/data/local-files/?d=images/missing.png"),
        task(3, "/data/local-files/?d=images/corrupt.png"),
        {"id": 4, "data": {"text": "no image here"}},
        task(5, "/data/local-files/?d=images/scene1.png"),
        task(6, "http://127.0.0.1:9/a.png"),
        "not a task",
    ]
    results = predict(client, tasks, POLYGON_CONFIG)
    version = results[0]["model_version"]
    good, bad = [0, 4], [1, 2, 3, 5, 6]
    for index in good:
        assert results[index]["model_version"] == version and results[index]["result"]
        validate_regions(results[index]["result"], POLYGON_CONFIG)
    for index in bad:
        # No "result": Label Studio stores nothing for the entry (see test_failed_tasks_e2e.py).
        assert results[index] == {"model_version": version, "error": results[index]["error"]}
    assert results[1]["error"].startswith("image_fetch:")
    assert results[2]["error"].startswith("image_decode:")
    assert results[3]["error"].startswith("task_data:")
    assert results[5]["error"].startswith("image_source:")
    metrics = metrics_of(client)
    assert metrics["tasks"] == {"failed": 5, "predicted": 2}
    assert metrics["failures"] == {"image_decode": 1, "image_fetch": 1, "image_source": 1, "task_data": 2}


def test_pixel_cap(make_client: Callable[..., FlaskClient], document_root: Path) -> None:
    # The cache off: a segmentation of this image cached by another test must not answer instead.
    client = make_client(local_files_document_root=document_root.resolve(), max_image_pixels=1000, cache_dir=None)
    [result] = predict(client, [task(1, "/data/local-files/?d=images/scene2.png")], POLYGON_CONFIG)
    assert "result" not in result
    assert (
        result["error"].startswith("image_decode:") and "exceeds the limit of 1000 pixels" in result["error"]
    )


def test_bad_attribute_gives_every_task_an_error_entry(client: FlaskClient) -> None:
    config = POLYGON_CONFIG.replace('toName="image"', 'toName="image" emerdiff-segments="zero"')
    results = predict(client, [task(1, SCENE), task(2, SCENE)], config)
    for result in results:
        assert "result" not in result
        assert "emerdiff-segments='zero' must be an integer" in result["error"]
    assert metrics_of(client)["failures"] == {"label_config": 2}
