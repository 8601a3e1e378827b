"""Any selection size: /predict answers within PREDICT_BUDGET_SECONDS, the rest segments in the background;
clicks and repeats find the cached segmentation of a known reference with no download."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.model import Runtime
from ml_backend.segmentation.references import ContentMemory
from tests.backend.servers import FakeServer, Route
from tests.backend.support import metrics_of, png_bytes, predict, task
from tests.interactive.support import keypoint, label_config

WAIT = 120.0  # generous bound for the background queue to drain (tiny model: about a second an image)
SMART_CONFIG = label_config("polygon")


def _runtime(client: FlaskClient) -> Runtime:
    return client.application.extensions["emerdiff"]


def _serve(file_host: FakeServer, count: int, first_seed: int = 700) -> list[dict]:
    tasks = []
    for number in range(count):
        path = f"/img/{number}.png"
        file_host.routes[path] = Route(body=png_bytes(first_seed + number))
        tasks.append(task(number + 1, file_host.url + path))
    return tasks


def _image_fetches(file_host: FakeServer) -> int:
    return len(file_host.requests_to("/img/"))


@pytest.fixture
def client(make_client: Callable[..., FlaskClient], tmp_path: Path) -> Iterator[Callable[..., FlaskClient]]:
    made: list[FlaskClient] = []

    def make(**overrides: object) -> FlaskClient:
        overrides.setdefault("cache_dir", tmp_path / "cache")
        made.append(make_client(allow_private_image_addresses=True, **overrides))
        return made[-1]

    yield make
    # The tests share one model: no background segmentation may outlive its test.
    for app in made:
        _runtime(app).background.close()
        assert _runtime(app).background.wait_idle(WAIT)


def test_a_selection_beyond_the_old_limit_is_answered_and_completed_by_repeats(
    client: Callable[..., FlaskClient], file_host: FakeServer
) -> None:
    # Label Studio sends the whole selection at once: 150 tasks were refused with 400 (limit 100).
    # Three images shared by the 150 tasks keep the tiny model's work short (same reference: one job).
    images = _serve(file_host, 3)
    tasks = [task(number + 1, images[number % 3]["data"]["image"]) for number in range(150)]
    app = client(predict_budget_seconds=0.0)
    first = predict(app, tasks)
    assert all("result" not in entry for entry in first)
    assert all(entry["error"].startswith("deferred: PREDICT_BUDGET_SECONDS spent") for entry in first)
    assert metrics_of(app)["tasks"]["deferred"] == 150
    runtime = _runtime(app)
    assert runtime.background.wait_idle(WAIT)
    assert _image_fetches(file_host) == 3  # by the background worker; the request downloaded nothing
    assert metrics_of(app)["background"]["segmentation_done"] == 3
    # The repeat answers every task from the cache, without a download.
    runtime.settings = dataclasses.replace(runtime.settings, predict_budget_seconds=3600.0)
    second = predict(app, tasks)
    assert all(entry["result"] for entry in second)
    assert _image_fetches(file_host) == 3
    assert metrics_of(app)["segmentor"]["segmentations"] == 3


def test_tasks_within_the_budget_are_predicted_in_the_request(
    client: Callable[..., FlaskClient], file_host: FakeServer
) -> None:
    tasks = _serve(file_host, 3, first_seed=760)
    app = client(predict_budget_seconds=3600.0)
    assert all(entry["result"] for entry in predict(app, tasks))
    assert "deferred" not in metrics_of(app)["tasks"]
    assert _runtime(app).background.pending() == 0


def test_a_full_background_queue_leaves_tasks_for_a_later_request(
    client: Callable[..., FlaskClient], file_host: FakeServer
) -> None:
    tasks = _serve(file_host, 6, first_seed=770)
    app = client(predict_budget_seconds=0.0, background_queue_size=1)
    runtime = _runtime(app)
    started, release = threading.Event(), threading.Event()
    assert runtime.background.submit("blocker", lambda: (started.set(), release.wait(WAIT)))
    assert started.wait(WAIT)  # the worker is busy: only the one free place takes a task
    entries = predict(app, tasks)
    release.set()
    assert all("result" not in entry for entry in entries)
    assert ["segmentation queued" in entry["error"] for entry in entries] == [True] + [False] * 5
    assert all("background queue full" in entry["error"] for entry in entries[1:])
    assert runtime.background.wait_idle(WAIT)
    # The next request queues the next one: repeats complete the selection.
    assert "segmentation queued" in predict(app, tasks[1:])[0]["error"]


def test_a_click_on_a_predicted_task_downloads_nothing(
    client: Callable[..., FlaskClient], file_host: FakeServer
) -> None:
    [one] = _serve(file_host, 1, first_seed=790)
    app = client(predict_budget_seconds=3600.0)
    assert predict(app, [one], SMART_CONFIG)[0]["result"]
    assert _image_fetches(file_host) == 1
    response = app.post(
        "/predict",
        json={"tasks": [one], "label_config": SMART_CONFIG, "project": "1.1",
              "params": {"context": {"result": [keypoint(30.0, 30.0)]}}},
    )
    assert response.status_code == 200
    assert response.json["results"][0]["result"]
    assert _image_fetches(file_host) == 1  # the click found the segmentation through the remembered content


def test_a_changed_reference_is_downloaded_again(
    client: Callable[..., FlaskClient], file_host: FakeServer
) -> None:
    [one] = _serve(file_host, 1, first_seed=800)
    app = client(predict_budget_seconds=3600.0)
    predict(app, [one])
    file_host.routes["/img/moved.png"] = Route(body=png_bytes(801))
    moved = task(1, file_host.url + "/img/moved.png")
    assert predict(app, [moved])[0]["result"]
    assert [seen.path for seen in file_host.requests_to("/img/")] == ["/img/0.png", "/img/moved.png"]


def test_content_memory_is_bounded_least_recently_used_first() -> None:
    memory = ContentMemory(capacity=2)
    memory.remember("a", "1" * 64)
    memory.remember("b", "2" * 64)
    assert memory.get("a") == "1" * 64  # a is now the most recent
    memory.remember("c", "3" * 64)
    assert memory.get("b") is None
    assert (memory.get("a"), memory.get("c"), len(memory)) == ("1" * 64, "3" * 64, 2)
