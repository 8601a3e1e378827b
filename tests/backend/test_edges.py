"""Edges the quick tests had left unpinned (issue 18): exact caps, the network edge, the queue's answer.

Real servers on 127.0.0.1 (tests/backend/servers.py), the real app and the real download stack. Where a
test needs a host name to resolve somewhere particular, ``socket.getaddrinfo`` answers for that one name
(a DNS server, not the code under test); every other name resolves as usual.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from PIL import Image

from ml_backend.core.errors import BlockedAddressError, ImageFetchError, ImageSourceError, ImageTooLargeError
from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings, SettingsError
from ml_backend.images.resolver import ImageResolver
from ml_backend.service.admission import PredictionQueue, QueueFullError
from segmentor.images import ImageError, load_image
from tests.backend.servers import (
    ACCESS_TOKEN,
    PERSONAL_ACCESS_TOKEN,
    FakeLabelStudio,
    FakeServer,
    Route,
    fake_jwt,
)
from tests.backend.support import POLYGON_CONFIG, png_bytes

IMAGE = png_bytes(1)
PUBLIC_ADDRESS = "93.184.215.14"  # any global unicast address: the check passes, nothing connects to it


def resolver(**overrides: object) -> ImageResolver:
    return ImageResolver(Settings(**{"fetch_timeout": 5.0, **overrides}))


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Host name -> the addresses successive lookups answer (the last one repeats); other names as usual."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


# --- caps: exactly at the cap is allowed, one past it is refused ------------------------------------------


@pytest.mark.parametrize("send_length", [True, False])
def test_a_download_of_exactly_max_image_bytes_is_read_and_one_byte_more_is_refused(
    file_host: FakeServer, send_length: bool
) -> None:
    file_host.routes["/fits.png"] = Route(body=b"\1" * 4096, send_length=send_length)
    file_host.routes["/over.png"] = Route(body=b"\1" * 4097, send_length=send_length)
    images = resolver(allowed_image_hosts=("127.0.0.1",), allow_private_image_addresses=True, max_image_bytes=4096)
    assert images.read(f"{file_host.url}/fits.png", 1) == b"\1" * 4096
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_BYTES=4096"):
        images.read(f"{file_host.url}/over.png", 1)


def test_a_local_file_of_exactly_max_image_bytes_is_read(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(IMAGE)
    fits = ImageResolver(Settings(local_files_document_root=tmp_path, max_image_bytes=len(IMAGE)))
    assert fits.read("/data/local-files/?d=a.png", 1) == IMAGE
    over = ImageResolver(Settings(local_files_document_root=tmp_path, max_image_bytes=len(IMAGE) - 1))
    with pytest.raises(ImageTooLargeError, match=f"{len(IMAGE)} bytes exceeds MAX_IMAGE_BYTES"):
        over.read("/data/local-files/?d=a.png", 1)


@pytest.mark.parametrize(("height", "width"), [(30, 70), (70, 30)])
def test_an_image_of_exactly_max_image_pixels_decodes_and_one_pixel_more_is_refused(height: int, width: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    assert load_image(buffer.getvalue(), max_pixels=height * width).shape == (height, width, 3)
    with pytest.raises(ImageError, match=f"{width}x{height} exceeds the limit of {height * width - 1} pixels"):
        load_image(buffer.getvalue(), max_pixels=height * width - 1)


def test_a_request_of_exactly_max_tasks_per_request_is_answered(make_client: Callable) -> None:
    client = make_client(max_tasks_per_request=3)
    tasks = [{"id": i, "data": {"image": "ftp://example.com/a.png"}} for i in range(3)]
    body = {"tasks": tasks, "label_config": POLYGON_CONFIG}
    response = client.post("/predict", json=body)
    assert response.status_code == 200 and len(response.json["results"]) == 3  # each task fails on its own
    response = client.post("/predict", json=body | {"tasks": [*tasks, tasks[0]]})
    assert response.status_code == 400
    assert "4 tasks in one request exceed MAX_TASKS_PER_REQUEST=3" in response.json["error"]


def test_a_body_of_exactly_max_request_bytes_is_read_and_one_byte_more_is_refused(make_client: Callable) -> None:
    limit = 4096
    client = make_client(max_request_bytes=limit)

    def body_of(size: int) -> bytes:
        empty = json.dumps({"action": "PROJECT_UPDATED", "pad": ""}).encode()
        return json.dumps({"action": "PROJECT_UPDATED", "pad": "x" * (size - len(empty))}).encode()

    response = client.post("/webhook", data=body_of(limit), content_type="application/json")
    assert response.status_code == 200 and response.json["status"] == "ignored"
    response = client.post("/webhook", data=body_of(limit + 1), content_type="application/json")
    assert response.status_code == 413


# --- the network edge ------------------------------------------------------------------------------------


def test_a_dns_answer_that_changes_between_the_check_and_the_connect_is_refused_at_the_peer(
    file_host: FakeServer, dns: dict[str, list[str]]
) -> None:
    file_host.routes["/a.png"] = Route(body=IMAGE)
    dns["rebind.example"] = [PUBLIC_ADDRESS, "127.0.0.1"]  # vetted: public; connected: loopback
    with pytest.raises(BlockedAddressError, match=r"rebind\.example: it resolves to the non-public address 127"):
        resolver().read(f"http://rebind.example:{file_host.port}/a.png", 1)
    assert file_host.seen == []  # refused before a byte of the request was sent


def test_a_compressed_body_is_capped_by_what_it_decompresses_to_not_by_its_content_length(
    file_host: FakeServer,
) -> None:
    gzip_header = {"Content-Encoding": "gzip"}
    file_host.routes["/bomb.png"] = Route(body=gzip.compress(b"\0" * 300_000), headers=gzip_header)
    file_host.routes["/fits.png"] = Route(body=gzip.compress(b"\0" * 100_000), headers=gzip_header)
    images = resolver(allowed_image_hosts=("127.0.0.1",), allow_private_image_addresses=True, max_image_bytes=100_000)
    assert len(gzip.compress(b"\0" * 300_000)) < 100_000  # the declared Content-Length is under the cap
    with pytest.raises(ImageTooLargeError, match="more than MAX_IMAGE_BYTES=100000 bytes"):
        images.read(f"{file_host.url}/bomb.png", 1)
    assert images.read(f"{file_host.url}/fits.png", 1) == b"\0" * 100_000


class _SlowUploads(FakeLabelStudio):
    """Label Studio whose uploads take ``delay_s`` before the status line."""

    delay_s = 0.0

    def respond(self, handler: BaseHTTPRequestHandler, body: bytes) -> Route:
        route = super().respond(handler, body)
        return dataclasses.replace(route, delay_s=self.delay_s) if "/data/upload/" in handler.path else route


@pytest.fixture
def slow_label_studio() -> Iterator[_SlowUploads]:
    server = _SlowUploads().start()
    yield server
    server.stop()


def test_the_retry_after_a_refused_access_token_spends_the_same_fetch_timeout(slow_label_studio: _SlowUploads) -> None:
    server = slow_label_studio
    server.uploads["1/a.png"] = IMAGE
    renewed = fake_jwt({"token_type": "access", "exp": 4102444800, "user_id": 1, "jti": "second"})
    server.access_tokens = [ACCESS_TOKEN, renewed]
    server.required_authorization = f"Bearer {renewed}"  # the first access token was revoked: 401, exchange, retry
    server.delay_s = 0.8  # each attempt alone fits FETCH_TIMEOUT=1.2; the two together do not
    images = resolver(label_studio_url=server.url, label_studio_api_key=PERSONAL_ACCESS_TOKEN, fetch_timeout=1.2)
    with pytest.raises(ImageFetchError, match=r"exceeded FETCH_TIMEOUT=1\.2 s"):
        images.read("/data/upload/1/a.png", 7)
    assert len(server.requests_to("/api/token/refresh/")) == 2  # the retry did start, inside the one budget


def test_allowed_host_patterns_ignore_case_and_the_urls_port(file_host: FakeServer) -> None:
    file_host.routes["/a.png"] = Route(body=IMAGE)
    settings = Settings.from_env({"ALLOWED_IMAGE_HOSTS": " LocalHost ", "ALLOW_PRIVATE_IMAGE_ADDRESSES": "true"})
    assert ImageResolver(settings).read(f"http://LOCALHOST:{file_host.port}/a.png", 1) == IMAGE


@pytest.mark.parametrize("pattern", ["localhost:8080", "*.example.com:443", "http://example.com"])
def test_an_allowed_host_pattern_with_a_port_or_scheme_is_refused_at_start(pattern: str) -> None:
    with pytest.raises(SettingsError, match="ALLOWED_IMAGE_HOSTS"):
        Settings.from_env({"ALLOWED_IMAGE_HOSTS": f"images.example.com,{pattern}"})


@pytest.mark.parametrize("host", ["example.com", "notexample.com", "example.com.evil.test", "examplexcom"])
def test_a_wildcard_pattern_allows_neither_the_apex_nor_look_alikes(host: str) -> None:
    images = resolver(allowed_image_hosts=("*.example.com",))
    with pytest.raises(ImageSourceError, match=f"host '{host}' is not in ALLOWED_IMAGE_HOSTS"):
        images.read(f"http://{host}/a.png", 1)


@pytest.mark.parametrize("host", ["img.example.com", "a.b.example.com", "IMG.Example.COM"])
def test_a_wildcard_pattern_allows_every_sub_domain(file_host: FakeServer, dns: dict, host: str) -> None:
    file_host.routes["/a.png"] = Route(body=IMAGE)
    dns[host.lower()] = ["127.0.0.1"]
    images = resolver(allowed_image_hosts=("*.example.com",), allow_private_image_addresses=True)
    assert images.read(f"http://{host}:{file_host.port}/a.png", 1) == IMAGE


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Basic " + "YWRtaW46d3Jvbmc=", 401), ("Basic " + "YWRtaW46czNjcmV0", 200)],  # admin:wrong / s3cret
)
def test_the_webhook_sits_behind_basic_auth(make_client: Callable, authorization: str | None, status: int) -> None:
    client = make_client(basic_auth_user="admin", basic_auth_pass="s3cret")
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=headers)
    assert response.status_code == status
    assert client.get("/health").status_code == 200  # only /health stays open


# --- the prediction queue -------------------------------------------------------------------------------


def test_retry_after_is_the_mean_prediction_time_times_the_queue() -> None:
    metrics = Metrics()
    queue = PredictionQueue(3, metrics)
    for _ in range(4):
        with queue.admit():
            pass
    metrics.increment("seconds", "predict", 10.0)  # four predictions took 10 s: 2.5 s each, 3 places -> 7.5
    # The three in the queue when the fourth comes have not finished: they do not count in the mean.
    with queue.admit(), queue.admit(), queue.admit(), pytest.raises(QueueFullError) as refused, queue.admit():
        pass
    assert refused.value.retry_after == 8
    metrics.increment("seconds", "predict", 1000.0)
    with queue.admit(), queue.admit(), queue.admit(), pytest.raises(QueueFullError) as refused, queue.admit():
        pass
    assert refused.value.retry_after == 300  # capped: Label Studio asks again within five minutes


def test_retry_after_is_one_second_before_any_prediction_finished() -> None:
    queue = PredictionQueue(1, Metrics())
    with queue.admit(), pytest.raises(QueueFullError) as refused, queue.admit():
        pass
    assert refused.value.retry_after == 1


def test_an_error_escaping_a_request_gives_its_place_back() -> None:
    queue = PredictionQueue(1, Metrics())
    for _ in range(3):
        with pytest.raises(RuntimeError), queue.admit():
            raise RuntimeError("the model failed")
        assert queue.depth == 0
    with queue.admit():
        assert queue.depth == 1


def test_the_app_answers_503_with_the_queues_retry_after(make_client: Callable) -> None:
    client = make_client(predict_queue_size=1)
    queue_metrics = client.application.extensions["emerdiff"].metrics
    queue_metrics.increment("queue", "admitted", 2)
    queue_metrics.increment("seconds", "predict", 9.0)  # two predictions done in 9 s; one place -> 5 s
    # The app's own queue (create_app keeps it in the routes' closure): hold its one place.
    cells = client.application.view_functions["predict"].__closure__
    app_queue = next(cell.cell_contents for cell in cells if isinstance(cell.cell_contents, PredictionQueue))
    with app_queue.admit():
        response = client.post("/predict", json={"tasks": [], "label_config": POLYGON_CONFIG})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
