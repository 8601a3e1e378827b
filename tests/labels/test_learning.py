"""Label learning through the service: webhooks teach, predictions carry the labels, bad input changes nothing.

Real components throughout: the bundled model, the Flask app, SQLite, the segmentation cache. Annotations are
made the way annotators make them in Label Studio: accept predicted regions and pick their labels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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

FIRST, SECOND, THIRD = (task(seed) for seed in (301, 302, 303))


def teach(client: FlaskClient, annotation_id: int, task_: dict, labels: dict[int, str],
          action: str = "ANNOTATION_CREATED", **fields: object) -> dict:
    prediction = predict(client, [task_])[0]
    response = client.post("/webhook", json=annotation_event(action, annotation_id, task_,
                                                             relabelled(prediction, labels), **fields))
    assert response.status_code == 201, response.json
    return response.json["result"]


@pytest.fixture
def client(make_app: Callable[..., FlaskClient]) -> FlaskClient:
    return make_app()


@pytest.fixture
def two_segments(client: FlaskClient) -> tuple[int, int]:
    return tuple(largest_segments(predict(client, [FIRST])[0], 2))


def test_annotated_labels_come_back_on_their_segments(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    before = predict(client, [FIRST, SECOND])
    assert {label for p in before for label in labels_by_segment(p).values()} == {"Object"}
    red, blue = two_segments
    result = teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    assert set(result["annotations"][0]["examples"]) == {"Red", "Blue"}
    after = predict(client, [FIRST, SECOND])
    labels = labels_by_segment(after[0])
    assert labels[red] == "Red" and labels[blue] == "Blue"
    # The segmentation is the cached one (same regions); only labels, scores and the version changed.
    assert [r["value"]["points"] for r in after[0]["result"]] == [r["value"]["points"] for r in before[0]["result"]]
    assert after[0]["model_version"] != before[0]["model_version"]
    assert all(0.0 <= region["score"] <= 1.0 for region in after[0]["result"])
    # Another image's segments now carry learnt labels too, only ones the control has.
    assert set(labels_by_segment(after[1]).values()) <= {"Red", "Blue", "Object"}
    assert set(labels_by_segment(after[1]).values()) & {"Red", "Blue"}


def test_no_annotations_means_todays_output(make_app: Callable[..., FlaskClient], tmp_path: Path) -> None:
    learning_on = predict(make_app(), [FIRST, SECOND])
    learning_off = predict(make_app(data_dir=None), [FIRST, SECOND])
    assert learning_on == learning_off
    assert not (tmp_path / "data").exists()  # predicting never creates the memory


def test_update_replaces_and_delete_forgets(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    original = predict(client, [FIRST])[0]
    red, blue = two_segments
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    teach(client, 11, FIRST, {red: "Blue", blue: "Red"}, action="ANNOTATION_UPDATED")
    swapped = labels_by_segment(predict(client, [FIRST])[0])
    assert swapped[red] == "Blue" and swapped[blue] == "Red"
    response = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 11}],
                                             "project": {"id": 7}})
    assert response.status_code == 201 and response.json["result"]["forgotten"] == 1
    assert predict(client, [FIRST])[0] == original  # default label, today's scores and version


def test_a_cancelled_annotation_is_forgotten(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    original = predict(client, [FIRST])[0]
    red, blue = two_segments
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    result = teach(client, 11, FIRST, {red: "Red"}, action="ANNOTATION_UPDATED", was_cancelled=True)
    assert result["annotations"][0] == {"id": 11, "cancelled": True, "forgotten": True}
    assert predict(client, [FIRST])[0] == original


def test_projects_are_kept_apart(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    other_project = predict(client, [FIRST], project="8.1700000000")[0]
    red, blue = two_segments
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    assert predict(client, [FIRST], project="8.1700000000")[0] == other_project


def test_memory_survives_a_restart(make_app: Callable[..., FlaskClient], two_segments: tuple[int, int]) -> None:
    red, blue = two_segments
    teach(make_app(), 11, FIRST, {red: "Red", blue: "Blue"})
    restarted = labels_by_segment(predict(make_app(), [FIRST])[0])
    assert restarted[red] == "Red" and restarted[blue] == "Blue"


def test_control_attributes(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    red, blue = two_segments
    plain = predict(client, [SECOND], config=label_config(learn="false"))[0]
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    # Learning off: exactly today's output even though the memory has examples.
    assert predict(client, [SECOND], config=label_config(learn="false"))[0] == plain
    # A threshold no guess reaches: every segment keeps the default label, scores say how unsure it was.
    strict = predict(client, [SECOND], config=label_config(threshold="1"))[0]
    assert set(labels_by_segment(strict).values()) == {"Object"}
    assert any(region["score"] < 1.0 for region in strict["result"])
    # Merging: no two regions of different segments with the same label touch any more.
    merged = predict(client, [SECOND], config=label_config(merge="true"))[0]
    unmerged = predict(client, [SECOND])[0]
    assert len(labels_by_segment(merged)) <= len(labels_by_segment(unmerged))
    assert sorted(set(labels_by_segment(merged).values())) == sorted(set(labels_by_segment(unmerged).values()))


def test_bad_attribute_values_are_reported(client: FlaskClient) -> None:
    for attributes, message in (({"threshold": "2"}, "emerdiff-threshold"), ({"learn": "maybe"}, "emerdiff-learn")):
        response = client.post("/setup", json={"project": "7.1", "schema": label_config(**attributes)})
        assert response.status_code == 400 and message in response.json["error"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"action": "ANNOTATION_CREATED"}, 400, "project"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 12, "result": []},
          "task": FIRST}, 400, "label_config"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CONFIG}, "annotation": [1, 2]}, 400,
         "annotation"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CONFIG},
          "annotation": {"id": 12, "task": 301, "result": "x"}, "task": FIRST}, 400, "result"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": "all"}, 400, "annotations"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 9, "label_config": "<View><Text name='t' value='$t'/>"
                                                      "</View>"},
          "annotation": {"id": 12, "task": 301, "result": []}, "task": FIRST}, 404, "label config"),
        ({"action": "START_TRAINING", "project": {"id": 7}}, 422, "LABEL_STUDIO_URL"),
    ],
)
def test_malformed_and_unknown_webhooks(client: FlaskClient, two_segments: tuple[int, int], body: dict,
                                        status: int, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    red, blue = two_segments
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    before = predict(client, [SECOND])[0]
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        response = client.post("/webhook", json=body)
    assert response.status_code == status
    assert reason in response.json["error"] and reason in caplog.text
    assert predict(client, [SECOND])[0] == before  # memory unchanged


def test_label_not_in_config_and_unreadable_image(client: FlaskClient, two_segments: tuple[int, int],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    red, blue = two_segments
    teach(client, 11, FIRST, {red: "Red", blue: "Blue"})
    before = predict(client, [SECOND])[0]
    regions = relabelled(predict(client, [FIRST])[0], {red: "Purple", blue: "Blue"})
    missing = {"id": 99, "data": {"image": "/data/local-files/?d=gone.png"}}
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        bad_label = client.post("/webhook", json=annotation_event("ANNOTATION_UPDATED", 11, FIRST, regions))
        bad_image = client.post("/webhook", json=annotation_event(
            "ANNOTATION_CREATED", 13, missing, relabelled(predict(client, [FIRST])[0], {red: "Green"})))
        assert bad_label.status_code == 422 and "'Purple' is not in control 'poly'" in bad_label.json["error"]
        # An image to fetch is learnt in the background (202); its failure is logged with the reason.
        assert bad_image.status_code == 202 and bad_image.json["status"] == "queued"
        learnt(client)
    assert "Purple" in caplog.text and "image_fetch" in caplog.text
    assert predict(client, [SECOND])[0] == before  # annotation 11 still teaches its old labels, 13 nothing


def test_concurrent_webhooks_and_predictions(make_app: Callable[..., FlaskClient],
                                             two_segments: tuple[int, int]) -> None:
    app = make_app().application
    red, blue = two_segments
    first_prediction = predict(app.test_client(), [FIRST])[0]
    predict(app.test_client(), [SECOND, THIRD])  # segmented and cached before the race
    errors: list[BaseException] = []

    def webhooks() -> None:
        client = app.test_client()
        try:
            for annotation in range(20, 30):
                response = client.post("/webhook", json=annotation_event(
                    "ANNOTATION_CREATED", annotation, FIRST, relabelled(first_prediction, {red: "Red", blue: "Blue"})))
                assert response.status_code == 201
        except BaseException as error:  # reported below
            errors.append(error)

    def predictions() -> None:
        client = app.test_client()
        try:
            for _ in range(10):
                for result in predict(client, [SECOND, THIRD]):
                    assert "error" not in result and result["result"]
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=webhooks), threading.Thread(target=predictions),
               threading.Thread(target=predictions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    final = labels_by_segment(predict(app.test_client(), [FIRST])[0])
    assert final[red] == "Red" and final[blue] == "Blue"


def test_bulk_created_annotations_and_deleted_tasks(client: FlaskClient, two_segments: tuple[int, int]) -> None:
    """An import of annotations (ANNOTATIONS_CREATED: lists) teaches; deleting the tasks forgets them."""
    original = predict(client, [FIRST])[0]
    red, blue = two_segments
    first = annotation_event("ANNOTATION_CREATED", 11, FIRST, relabelled(original, {red: "Red"}))
    second = annotation_event("ANNOTATION_CREATED", 12, FIRST, relabelled(original, {blue: "Blue"}))
    bulk = {"action": "ANNOTATIONS_CREATED", "annotation": [first["annotation"], second["annotation"]],
            "task": [first["task"]], "project": first["project"]}
    response = client.post("/webhook", json=bulk)
    assert response.status_code == 201 and [a["id"] for a in response.json["result"]["annotations"]] == [11, 12]
    labels = labels_by_segment(predict(client, [FIRST])[0])
    assert labels[red] == "Red" and labels[blue] == "Blue"
    response = client.post("/webhook", json={"action": "TASKS_DELETED", "tasks": [{"id": FIRST["id"]}],
                                             "project": {"id": 7}})
    assert response.status_code == 201 and response.json["result"]["forgotten"] == 2
    assert predict(client, [FIRST])[0] == original


def test_an_unreadable_memory_costs_the_labels_not_the_predictions(
    make_app: Callable[..., FlaskClient], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unlearnt = predict(make_app(data_dir=None), [FIRST, SECOND])
    data = tmp_path / "data"
    data.mkdir()
    (data / "label_memory.sqlite3").write_bytes(b"not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="ml_backend"):
        served = predict(make_app(), [FIRST, SECOND])
    assert served == unlearnt  # every task answered, with the default labels and today's version
    assert "label memory" in caplog.text
