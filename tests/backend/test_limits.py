"""What one request may ask for: body size, tasks, segmentations, knob ranges, the prediction queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.core.settings import Settings, SettingsError
from ml_backend.segmentation.service import MAX_SEGMENTORS
from tests.backend.support import BRUSH_CONFIG, POLYGON_CONFIG, metrics_of, png_bytes, predict, task

SCENE = "/data/local-files/?d=images/scene0.png"


@pytest.fixture
def client(make_client: Callable[..., FlaskClient], document_root: Path) -> FlaskClient:
    return make_client(local_files_document_root=document_root.resolve(), max_tasks_per_request=5)


def test_body_over_the_limit_is_413(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(max_request_bytes=4096)
    body = {"tasks": [task(1, "/x.png")], "label_config": POLYGON_CONFIG, "padding": "x" * 5000}
    response = client.post("/predict", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 413
    assert "Request Entity Too Large" in response.json["error"]


def test_too_many_tasks_is_400_naming_the_limit(client: FlaskClient) -> None:
    tasks = [task(index, SCENE) for index in range(6)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": POLYGON_CONFIG})
    assert response.status_code == 400
    assert response.json["error"] == (
        "6 tasks in one request exceed MAX_TASKS_PER_REQUEST=5 (send smaller batches, or raise the limit)"
    )


def test_deeply_nested_json_is_400(client: FlaskClient) -> None:
    body = '{"tasks": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json["error"]


def test_distinct_segmentations_per_task_are_capped(client: FlaskClient) -> None:
    controls = "".join(
        f'<BrushLabels name="b{area}" toName="image" emerdiff-min-area="{area}"><Label value="A"/></BrushLabels>'
        for area in (5, 10, 20)
    )
    config = f'<View><Image name="image" value="$image"/>{controls}</View>'
    [result] = predict(client, [task(1, SCENE)], config)
    assert "result" not in result
    assert result["error"].startswith("label_config: the controls ask for 3 different segmentations")
    assert "MAX_SEGMENTATIONS_PER_TASK=2" in result["error"]
    assert client.post("/setup", json={"schema": config}).status_code == 400


def test_polygons_on_a_text_object_are_refused(client: FlaskClient) -> None:
    config = (
        '<View><Text name="text" value="$image"/>'
        '<PolygonLabels name="poly" toName="text"><Label value="A"/></PolygonLabels></View>'
    )
    response = client.post("/setup", json={"schema": config})
    assert response.status_code == 400
    assert "toName='text' is a <Text>, but EmerDiff pre-annotates <Image> objects only" in response.json["error"]


def test_idle_segmentors_are_evicted(client: FlaskClient) -> None:
    service = client.application.extensions["emerdiff"].segmentation
    for area in range(MAX_SEGMENTORS + 4):
        config = BRUSH_CONFIG.replace('toName="image"', f'toName="image" emerdiff-min-area="{area + 50}"')
        assert client.post("/setup", json={"schema": config}).status_code == 200
    assert len(service._segmentors) == MAX_SEGMENTORS
    assert service.default_params() in service._segmentors
    assert metrics_of(client)["segmentor"]["evicted_segmentors"] == 5


def test_full_queue_answers_503_with_retry_after_while_health_answers(
    make_client: Callable[..., FlaskClient], document_root: Path
) -> None:
    client = make_client(local_files_document_root=document_root.resolve(), predict_queue_size=2, cache_dir=None)
    runtime = client.application.extensions["emerdiff"]
    (document_root / "fresh.png").write_bytes(png_bytes(7001))
    with ThreadPoolExecutor(max_workers=3) as pool:
        with runtime.segmentation.gpu_lock:  # the model is busy: admitted requests wait for it
            waiting = [
                pool.submit(predict, client, [task(index, "/data/local-files/?d=fresh.png")]) for index in (1, 2)
            ]
            while runtime.metrics.count("queue", "admitted") < 2:
                time.sleep(0.01)
            body = {"tasks": [task(3, SCENE)], "label_config": POLYGON_CONFIG}
            # In a thread: were it admitted, it would wait for the lock this test holds.
            refused = pool.submit(client.post, "/predict", json=body).result(timeout=60)
            assert refused.status_code == 503
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json["error"].startswith("busy: 2 prediction request(s) already admitted")
            assert client.get("/health").status_code == 200
            assert "emerdiff_predict_queue_depth 2.0" in client.get("/metrics").text
        answers = [future.result() for future in waiting]
    assert all(answer[0]["result"] for answer in answers)
    assert metrics_of(client)["queue"] == {"admitted": 2, "refused": 1}
    assert "emerdiff_predict_queue_depth 0.0" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("environ", "field", "value"),
    [
        # Upstream's MODEL_DIR is the backend's state folder (DATA_DIR), never the model to load.
        ({"MODEL_DIR": "/data/models"}, "data_dir", Path("/data/models")),
        ({"MODEL_DIR": "/data/models"}, "model", Settings().model),
        ({"MODEL_DIR": "off"}, "data_dir", None),
        ({"DEVICE": "cpu"}, "device", "cpu"),
        ({"THREADS": "8"}, "threads", 8),
        ({"LABEL_STUDIO_HOST": "http://ls:8080"}, "label_studio_url", "http://ls:8080"),
        ({"LABEL_STUDIO_ACCESS_TOKEN": "abc"}, "label_studio_api_key", "abc"),
        ({"WORKERS": "1"}, "threads", 4),
        ({"THREADS": "8", "PREDICT_QUEUE_SIZE": "7"}, "predict_queue_size", 7),
        ({"THREADS": "8"}, "predict_queue_size", 6),
    ],
)
def test_upstream_variable_names(environ: dict[str, str], field: str, value: object) -> None:
    assert getattr(Settings.from_env(environ), field) == value


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WORKERS": "2"}, "WORKERS=2: this backend runs one worker"),
        ({"DEVICE": "cpu", "EMERDIFF_DEVICE": "cuda"}, "DEVICE='cpu' and EMERDIFF_DEVICE='cuda' disagree"),
        ({"THREADS": "4", "PREDICT_QUEUE_SIZE": "4"}, "PREDICT_QUEUE_SIZE='4': must be an integer between 1 and 3"),
        ({"MAX_TASKS_PER_REQUEST": "0"}, "MAX_TASKS_PER_REQUEST='0'"),
        ({"EMERDIFF_MIN_AREA": "1e9"}, "EMERDIFF_MIN_AREA='1e9'"),
    ],
)
def test_refused_settings(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        Settings.from_env(environ)


def test_images_are_decoded_under_the_model_lock(
    make_client: Callable[..., FlaskClient], document_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One decoded image in memory at a time, however many threads hold downloaded files."""
    from ml_backend.segmentation import service as segmentation_module

    client = make_client(local_files_document_root=document_root.resolve(), cache_dir=None)
    service = client.application.extensions["emerdiff"].segmentation
    decode = segmentation_module.load_image
    held: list[bool] = []

    def recording_decode(*args: object, **kwargs: object) -> object:
        held.append(service.gpu_lock.locked())
        return decode(*args, **kwargs)

    monkeypatch.setattr(segmentation_module, "load_image", recording_decode)
    predict(client, [task(1, SCENE), task(2, "/data/local-files/?d=images/scene1.png")])
    assert held == [True, True]
