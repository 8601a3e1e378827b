"""The HTTP contract: every route, its shape, its errors, and basic auth."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.backend.support import BOTH_CONFIG, POLYGON_CONFIG, metrics_of

VERSION = re.compile(r"^emerdiff-[0-9a-f]{12}$")


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


@pytest.mark.parametrize("path", ["/health", "/"])
def test_health(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json["status"] == "UP"
    assert response.json["model_class"] == "EmerDiffModel"
    assert VERSION.match(response.json["model_version"])


def test_setup_returns_the_project_version(client: FlaskClient) -> None:
    response = client.post(
        "/setup",
        json={
            "project": "3.1700000000",
            "schema": POLYGON_CONFIG,
            "hostname": "http://ignored",
            "access_token": "",
            "extra_params": {},
        },
    )
    assert response.status_code == 200
    version = response.json["model_version"]
    assert VERSION.match(version)
    assert client.post("/setup", json={"schema": POLYGON_CONFIG}).json["model_version"] == version
    assert client.post("/setup", json={"schema": BOTH_CONFIG}).json["model_version"] != version


def test_setup_version_follows_output_changing_knobs(client: FlaskClient) -> None:
    def version(attributes: str) -> str:
        config = POLYGON_CONFIG.replace('toName="image"', f'toName="image" {attributes}')
        return client.post("/setup", json={"schema": config}).json["model_version"]

    versions = {
        version(""),
        version('emerdiff-segments="5"'),
        version('emerdiff-tolerance="0.5"'),
        version('emerdiff-label="Background"'),
        version('emerdiff-min-area="3"'),
    }
    assert len(versions) == 5


def test_setup_without_schema_gives_the_default_version(client: FlaskClient) -> None:
    assert (
        client.post("/setup", json={"project": "1.1"}).json["model_version"]
        == client.get("/health").json["model_version"]
    )


def test_setup_refuses_an_unusable_config(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    config = (
        '<View><Image name="i" value="$image"/>'
        '<Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    )
    response = client.post("/setup", json={"schema": config, "project": "7.1"})
    assert response.status_code == 400
    assert "no <PolygonLabels> or <BrushLabels>" in response.json["error"]
    # Label Studio shows only "400 Client Error": the reason must be in our log.
    assert "/setup refused the label config of project '7.1'" in caplog.text
    assert "no <PolygonLabels> or <BrushLabels>" in caplog.text


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/predict", b"not json"),
        ("/predict", b"[1, 2]"),
        ("/predict", b'{"label_config": "<View/>"}'),
        ("/predict", b'{"tasks": {"id": 1}, "label_config": "<View/>"}'),
        ("/predict", b'{"tasks": []}'),
        ("/predict", b'{"tasks": [], "label_config": "<View/>", "params": [1]}'),
        ("/setup", b"{"),
        ("/webhook", b'{"project": {}}'),
    ],
)
def test_malformed_requests_get_400_json(client: FlaskClient, route: str, body: bytes) -> None:
    response = client.post(route, data=body, content_type="application/json")
    assert response.status_code == 400
    assert isinstance(response.json["error"], str) and response.json["error"]


def test_unknown_route_and_method_are_json_errors(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
    assert "error" in client.get("/nope").json
    assert client.get("/predict").status_code == 405


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("ANNOTATIONS_DELETED", {"annotations": [{"id": 5}]}),
        ("ANNOTATION_DELETED", {"annotation": {"id": 5}}),
        ("TASKS_DELETED", {"tasks": [{"id": 3}]}),
    ],
)
def test_webhook_training_events_get_201(client: FlaskClient, action: str, body: dict) -> None:
    # Label learning's events (tests/labels cover learning itself); forgetting what was never learnt is a no-op.
    response = client.post("/webhook", json={"action": action, "project": {"id": 1}, **body})
    assert response.status_code == 201
    assert response.json["status"] == "ok" and response.json["action"] == action
    assert response.json["result"]["forgotten"] == 0


def test_webhook_other_events_get_200(client: FlaskClient) -> None:
    response = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert response.status_code == 200
    assert response.json["status"] == "ignored"


def test_predict_with_no_tasks(client: FlaskClient) -> None:
    response = client.post("/predict", json={"tasks": [], "label_config": POLYGON_CONFIG})
    assert response.status_code == 200 and response.json == {"results": []}


def test_metrics_shape(client: FlaskClient) -> None:
    client.post("/setup", json={"schema": POLYGON_CONFIG})
    metrics = metrics_of(client)
    assert {"requests", "tasks", "failures", "cache", "segmentor", "seconds"} <= metrics.keys()
    assert metrics["requests"]["setup"] == 1
    exposition = client.get("/metrics")
    assert exposition.status_code == 200 and exposition.content_type.startswith("text/plain")
    assert 'emerdiff_requests_total{route="setup"} 1.0' in exposition.text
    assert 'emerdiff_request_seconds_count{route="setup"} 1.0' in exposition.text  # latency per route
    assert "emerdiff_predict_queue_depth 0.0" in exposition.text


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_protects_everything_but_health(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(basic_auth_user="labelstudio", basic_auth_pass="s3cret")
    setup = {"schema": POLYGON_CONFIG}
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200
    for wrong in (
        {},
        basic("labelstudio", "nope"),
        basic("someone", "s3cret"),
        {"Authorization": "Bearer x"},
    ):
        response = client.post("/setup", json=setup, headers=wrong)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/metrics").status_code == 401
    assert client.post("/predict", json={"tasks": [], "label_config": POLYGON_CONFIG}).status_code == 401
    assert client.post("/setup", json=setup, headers=basic("labelstudio", "s3cret")).status_code == 200
    assert client.get("/metrics", headers=basic("labelstudio", "s3cret")).status_code == 200
