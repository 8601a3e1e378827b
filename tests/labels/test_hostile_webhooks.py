"""Hostile and unlucky webhooks against label learning (issue 19): each is refused with a clear 4xx / 5xx that
says why, and leaves the label memory as it was; the memory survives being deleted, locked or busy.

Real components: the bundled model, the Flask app, SQLite, the segmentation cache, the background learner,
and for the trust cases a Label Studio stand-in speaking its API (tests/preannotate/stub_label_studio.py).
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.labels.support import (
    CONFIG,
    annotation_event,
    label_config,
    labels_by_segment,
    largest_segments,
    learnt,
    predict,
    relabelled,
    task,
)
from tests.preannotate.stub_label_studio import TOKEN, StubState, running_stub

FIRST, SECOND = task(301), task(302)


@pytest.fixture
def client(make_app: Callable[..., FlaskClient]) -> FlaskClient:
    return make_app()


@pytest.fixture
def taught(client: FlaskClient) -> dict:
    """Annotation 11 of project 7 teaches Red and Blue on FIRST's two largest segments (cached)."""
    prediction = predict(client, [FIRST])[0]
    red, blue = largest_segments(prediction, 2)
    body = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(prediction, {red: "Red", blue: "Blue"}))
    response = client.post("/webhook", json=body)
    assert response.status_code == 201, response.json
    return {"prediction": prediction, "red": red, "blue": blue, "body": body}


def memory_rows(client: FlaskClient, project: int = 7) -> dict[str, int]:
    return client.application.extensions["emerdiff"].learning.memory.counts(project)


def regions_with(prediction: dict, segments: dict[int, str], **changes: object) -> list[dict]:
    regions = relabelled(prediction, segments)
    for region in regions:
        region.update(changes)
    return regions


# --- malformed results refuse and change nothing (item 3) --------------------------------------------

MALFORMED_RESULTS = [
    ("region is a number", [1]),
    ("region is an empty object", [{}]),
    ("value is a string", [{"from_name": "poly", "to_name": "image", "type": "polygonlabels", "value": "x"}]),
    ("from_name missing", [{"type": "polygonlabels", "value": {"polygonlabels": ["Red"]}}]),
    ("no label list", [{"from_name": "poly", "to_name": "image", "type": "polygonlabels", "value": {"points": []}}]),
    ("two labels", [{"from_name": "poly", "to_name": "image", "type": "polygonlabels",
                     "value": {"polygonlabels": ["Red", "Blue"], "points": [[1, 1], [5, 1], [5, 5]]}}]),
]


@pytest.mark.parametrize("result", [pytest.param(result, id=name) for name, result in MALFORMED_RESULTS])
def test_a_malformed_result_is_refused_and_keeps_the_stored_examples(client: FlaskClient, taught: dict,
                                                                     result: list) -> None:
    before = memory_rows(client)
    body = annotation_event("ANNOTATION_UPDATED", 11, FIRST, result)
    response = client.post("/webhook", json=body)
    assert response.status_code == 400, response.json
    assert "result[0]" in response.json["error"]
    assert memory_rows(client) == before


# --- ids and numbers no SQLite integer or float holds (items 7, 8, 9, 10) ------------------------------

HUGE = 2**64


def hostile_bodies(taught: dict) -> list[tuple[str, dict, str]]:
    body = taught["body"]

    def changed(path: str, value: object) -> dict:
        copy = json.loads(json.dumps(body))
        *parents, key = path.split(".")
        node = copy
        for parent in parents:
            node = node[parent]
        node[key] = value
        return copy

    huge_point = json.loads(json.dumps(body))
    huge_point["annotation"]["result"][0]["value"]["points"][0] = [10**400, 5]
    return [
        ("project '²'", changed("project.id", "²"), "'project'"),
        ("project '²' as a string form", changed("project.id", "²3.1700000000"), "'project'"),
        ("project beyond 64 bits", changed("project.id", HUGE), "'project'"),
        ("project '<huge>.<timestamp>'", changed("project.id", f"{HUGE}.1700000000"), "'project'"),
        ("annotation id beyond 64 bits", changed("annotation.id", HUGE), "annotation.id"),
        ("task id beyond 64 bits", changed("task.id", HUGE) | {"annotation": {**body["annotation"], "task": HUGE}},
         "annotation.task"),
        ("annotation.task a list", changed("annotation.task", [301]), "annotation.task"),
        ("annotation.task id a list", changed("annotation.task", {"id": [301]}), "annotation.task"),
        ("negative annotation id", changed("annotation.id", -1), "annotation.id"),
        ("point beyond a float", huge_point, "point 0"),
        ("updated_at not a time", changed("annotation.updated_at", "yesterday"), "updated_at"),
    ]


CASE_NAMES = ["project '²'", "project '²' as a string form", "project beyond 64 bits", "project '<huge>.<timestamp>'",
              "annotation id beyond 64 bits", "task id beyond 64 bits", "annotation.task a list",
              "annotation.task id a list", "negative annotation id", "point beyond a float", "updated_at not a time"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_odd_ids_and_numbers_get_a_400(client: FlaskClient, taught: dict, case: str) -> None:
    body, expected = next((body, expected) for name, body, expected in hostile_bodies(taught) if name == case)
    before = memory_rows(client)
    response = client.post("/webhook", json=body)
    assert response.status_code == 400, response.json
    assert expected in response.json["error"]
    assert memory_rows(client) == before


@pytest.mark.parametrize("action", ["ANNOTATIONS_DELETED", "TASKS_DELETED"])
def test_forgetting_ids_beyond_64_bits_is_a_400(client: FlaskClient, taught: dict, action: str) -> None:
    before = memory_rows(client)
    key = "annotations" if action == "ANNOTATIONS_DELETED" else "tasks"
    response = client.post("/webhook", json={"action": action, key: [{"id": HUGE}], "project": {"id": 7}})
    assert response.status_code == 400 and "between 0 and" in response.json["error"]
    assert memory_rows(client) == before


def test_setup_and_predict_with_odd_project_ids_answer_without_learnt_labels(client: FlaskClient,
                                                                              taught: dict) -> None:
    plain = predict(client, [SECOND], project="8.1700000000")[0]
    for project in ("²", "²7.1700000000", f"{HUGE}.1700000000", str(HUGE)):
        setup = client.post("/setup", json={"project": project, "schema": CONFIG})
        assert setup.status_code == 200, setup.json
        assert predict(client, [SECOND], project=project)[0] == plain


# --- the memory file: deleted, replaced, locked (item 2, busy lock) -------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced by an empty file", "folder deleted"])
def test_a_memory_deleted_while_running_is_made_again(client: FlaskClient, taught: dict, how: str) -> None:
    path = client.application.extensions["emerdiff"].learning.memory.path
    if how == "folder deleted":
        for file in path.parent.iterdir():
            file.unlink()
        path.parent.rmdir()
    else:
        path.unlink()
        if how == "replaced by an empty file":
            path.write_bytes(b"")
    # Reading a memory with nothing in it: predictions as unlearnt.
    assert set(labels_by_segment(predict(client, [FIRST])[0]).values()) == {"Object"}
    response = client.post("/webhook", json=taught["body"])
    assert response.status_code == 201, response.json
    labels = labels_by_segment(predict(client, [FIRST])[0])
    assert labels[taught["red"]] == "Red" and labels[taught["blue"]] == "Blue"


def test_a_memory_replaced_by_garbage_names_the_file_and_the_way_out(client: FlaskClient, taught: dict) -> None:
    path = client.application.extensions["emerdiff"].learning.memory.path
    path.write_bytes(b"not a database" * 100)
    response = client.post("/webhook", json=taught["body"])
    assert response.status_code == 503, response.json
    assert str(path) in response.json["error"] and "delete the file" in response.json["error"]
    assert predict(client, [SECOND])  # predictions still answer (without learnt labels)
    path.unlink()
    assert client.post("/webhook", json=taught["body"]).status_code == 201


def test_a_memory_locked_by_another_process_is_retried_in_the_background(client: FlaskClient, taught: dict) -> None:
    """The request waits BUSY_TIMEOUT_S at most (not 30 s, then a 500); Label Studio does not resend a
    webhook, so the annotation is queued and the background learner retries it until the lock is free."""
    path = client.application.extensions["emerdiff"].learning.memory.path
    swapped = annotation_event("ANNOTATION_UPDATED", 11, FIRST,
                               relabelled(taught["prediction"], {taught["red"]: "Green"}))
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, stuck
    try:
        response = client.post("/webhook", json=swapped)
        assert response.status_code == 202, response.json
        assert response.json["status"] == "queued"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    learnt(client)
    assert set(memory_rows(client)) == {"Green"}


# --- the background learner (item 1) ---------------------------------------------------------------------


@pytest.fixture
def blocked_learner(make_app: Callable[..., FlaskClient]) -> Iterator[tuple[FlaskClient, threading.Event]]:
    """An app whose learning queue holds 2 webhooks, its worker busy with a job that waits for the event."""
    client = make_app(learning_queue_size=2)
    predict(client, [FIRST])
    jobs = client.application.extensions["emerdiff"].learning.jobs
    started, release = threading.Event(), threading.Event()
    assert jobs.submit("blocker", lambda: (started.set(), release.wait(120)))
    assert started.wait(60)
    yield client, release
    release.set()


def test_webhooks_queue_behind_a_busy_learner_in_order_and_a_full_queue_says_so(
    blocked_learner: tuple[FlaskClient, threading.Event], caplog: pytest.LogCaptureFixture
) -> None:
    client, release = blocked_learner
    prediction = predict(client, [FIRST])[0]
    red, blue = largest_segments(prediction, 2)
    create = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(prediction, {red: "Red", blue: "Blue"}))
    delete = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 11}], "project": {"id": 7}}
    other = annotation_event("ANNOTATION_CREATED", 12, FIRST, relabelled(prediction, {red: "Green"}))
    first, second = client.post("/webhook", json=create), client.post("/webhook", json=delete)
    assert (first.status_code, second.status_code) == (202, 202), (first.json, second.json)
    with caplog.at_level(logging.ERROR, logger="ml_backend"):
        full = client.post("/webhook", json=other)
    assert full.status_code == 503 and full.headers["Retry-After"]
    assert "LEARNING_QUEUE_SIZE=2" in full.json["error"] and "Start Training" in caplog.text
    release.set()
    learnt(client)
    assert memory_rows(client) == {}  # created, then deleted, in arrival order; 12 refused, not learnt
    assert client.application.extensions["emerdiff"].metrics.count("webhook_failures", "learning_queue_full") == 1


def test_an_uncached_image_is_learnt_in_the_background(make_app: Callable[..., FlaskClient], taught: dict,
                                                       tmp_path: Path) -> None:
    fresh = make_app(cache_dir=tmp_path / "fresh-cache")  # this service never segmented FIRST
    response = fresh.post("/webhook", json=taught["body"])
    assert response.status_code == 202 and response.json["status"] == "queued"
    learnt(fresh)
    labels = labels_by_segment(predict(fresh, [FIRST])[0])
    assert labels[taught["red"]] == "Red" and labels[taught["blue"]] == "Blue"


# --- Label Studio: unreachable, and the source of truth for projects (item 15, trust) -------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_start_training_with_label_studio_unreachable_names_it(make_app: Callable[..., FlaskClient]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    client = make_app(label_studio_url=url, label_studio_api_key=TOKEN)
    response = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
    assert response.status_code == 502, response.json
    assert url in response.json["error"] and "could not be reached" in response.json["error"]
    assert response.headers["Retry-After"]


@pytest.fixture
def stub_state() -> StubState:
    return StubState(label_config=CONFIG, tasks={})


@pytest.fixture
def label_studio(stub_state: StubState) -> Iterator[str]:
    """A Label Studio that has project 1 only, with the tests' label config."""
    with running_stub(stub_state) as url:
        yield url


def test_with_label_studio_configured_its_label_config_decides_not_the_body(
    make_app: Callable[..., FlaskClient], label_studio: str, stub_state: StubState
) -> None:
    client = make_app(label_studio_url=label_studio, label_studio_api_key=TOKEN)
    prediction = predict(client, [FIRST], project="1.1700000000")[0]
    red, blue = largest_segments(prediction, 2)
    wider = label_config().replace('<Label value="Blue"/>', '<Label value="Blue"/><Label value="Purple"/>')
    forged = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(prediction, {red: "Purple"}), project=1,
                              config=wider)
    response = client.post("/webhook", json=forged)
    assert response.status_code == 422 and "'Purple' is not in control 'poly'" in response.json["error"]
    unknown = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(prediction, {red: "Red"}), project=2)
    response = client.post("/webhook", json=unknown)
    assert response.status_code == 404 and "has no project 2" in response.json["error"]
    forget = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": [{"id": 301}], "project": {"id": 2}})
    assert forget.status_code == 404  # deletes too: only projects Label Studio has
    assert stub_state.log.count(("GET", "/api/projects/2/")) == 1  # the refusal is kept, not asked again
    assert memory_rows(client, 1) == {} and memory_rows(client, 2) == {}
    genuine = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(prediction, {red: "Red", blue: "Blue"}),
                               project=1, config="<View/>")  # the body's config is not even read
    assert client.post("/webhook", json=genuine).status_code == 201
    assert set(memory_rows(client, 1)) == {"Red", "Blue"}


def test_an_older_update_replayed_after_a_newer_one_does_not_win(client: FlaskClient, taught: dict) -> None:
    red, blue = taught["red"], taught["blue"]
    newer = annotation_event("ANNOTATION_UPDATED", 11, FIRST, relabelled(taught["prediction"], {red: "Green"}),
                             updated_at="2026-01-02T00:00:00.000000Z")
    older = annotation_event("ANNOTATION_UPDATED", 11, FIRST,
                             relabelled(taught["prediction"], {red: "Blue", blue: "Red"}),
                             updated_at="2026-01-01T00:00:00.000000Z")
    assert client.post("/webhook", json=newer).status_code == 201
    replay = client.post("/webhook", json=older)
    assert replay.status_code == 201 and replay.json["result"]["annotations"][0]["stale"] is True
    assert set(memory_rows(client)) == {"Green"}
