"""Where a URL points is read once, as the HTTP client reads it; the token never leaves Label Studio's
origin; FETCH_TIMEOUT is a deadline for a whole download. All against real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from ml_backend.core.errors import BlockedAddressError, ImageFetchError, ImageSourceError, TaskError
from ml_backend.core.settings import Settings
from ml_backend.core.urls import AmbiguousURLError, Origin, http_origin
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import ACCESS_TOKEN, LEGACY_TOKEN, FakeLabelStudio, FakeServer, Route
from tests.backend.support import png_bytes

IMAGE = png_bytes(2)
UPLOAD = "/data/upload/1/a.png"

# {L}: Label Studio's port (served as "localhost"); {E}: the recording server's port (as 127.0.0.1).
# Each shape is one that some URL parser reads as Label Studio's and another as the other host's, or
# an odd spelling of either; none may bring the token to the recording server.
PARSER_DIFFERENTIAL_SHAPES = [
    "http://127.0.0.1:{E}\\@localhost:{L}" + UPLOAD,
    "http://127.0.0.1:{E}\\\\@localhost:{L}" + UPLOAD,
    "http://localhost:{L}@127.0.0.1:{E}" + UPLOAD,
    "http://localhost:{L}:@127.0.0.1:{E}" + UPLOAD,
    "http://localhost%3A{L}@127.0.0.1:{E}" + UPLOAD,
    "http://127.0.0.1:{E}%2F@localhost:{L}" + UPLOAD,
    "http://127.0.0.1:{E};@localhost:{L}" + UPLOAD,
    "http://127.0.0.1:{E}#@localhost:{L}" + UPLOAD,
    "http://127.0.0.1:{E}?@localhost:{L}" + UPLOAD,
    "http://localhost\t:{L}@127.0.0.1:{E}" + UPLOAD,
    "http://localhost:{L}\n@127.0.0.1:{E}" + UPLOAD,
    "http://local\x00host:{L}@127.0.0.1:{E}" + UPLOAD,
    "http://[localhost:{L}]@127.0.0.1:{E}" + UPLOAD,
    "http://[::1:{L}]" + UPLOAD,
    "http://localhost:{L}:{E}" + UPLOAD,
    "http://localhost:+{L}" + UPLOAD,
    "http://localhost: {L}" + UPLOAD,
    "http://127.0.0.1:{E} @localhost:{L}" + UPLOAD,
    "http:/\\127.0.0.1:{E}" + UPLOAD,
    "http:127.0.0.1:{E}" + UPLOAD,
    "//127.0.0.1:{E}" + UPLOAD,
    "/\\127.0.0.1:{E}" + UPLOAD,
    "http://127.0.0.1:{E}/" + UPLOAD,
    " http://127.0.0.1:{E}" + UPLOAD,
    "http://127.0.0.1:{E}\u3002localhost:{L}" + UPLOAD,
    "http://ｌocalhost:{L}" + UPLOAD,
    "http://localhost.:{L}" + UPLOAD,
    "HTTP://LOCALHOST:{L}" + UPLOAD,
    "http://127.0.0.1:{E}" + UPLOAD,
]


@pytest.fixture
def servers() -> Iterator[tuple[FakeLabelStudio, FakeServer]]:
    label_studio, recorder = FakeLabelStudio().start(), FakeServer().start()
    label_studio.uploads["1/a.png"] = IMAGE
    recorder.routes[UPLOAD] = Route(body=IMAGE)
    recorder.routes["/" + UPLOAD] = Route(body=IMAGE)
    yield label_studio, recorder
    label_studio.stop()
    recorder.stop()


def ls_resolver(label_studio: FakeLabelStudio, **overrides: object) -> ImageResolver:
    settings = Settings(
        label_studio_url=f"http://localhost:{label_studio.port}",
        label_studio_api_key=LEGACY_TOKEN,
        allow_private_image_addresses=True,
        fetch_timeout=5.0,
        **overrides,
    )
    return ImageResolver(settings)


def tokens_seen(server: FakeServer) -> list[str]:
    return [
        value
        for seen in server.seen
        for value in seen.headers.values()
        if LEGACY_TOKEN in value or ACCESS_TOKEN in value
    ]


@pytest.mark.parametrize("shape", PARSER_DIFFERENTIAL_SHAPES)
def test_token_never_reaches_another_host(servers: tuple[FakeLabelStudio, FakeServer], shape: str) -> None:
    label_studio, recorder = servers
    url = shape.format(L=label_studio.port, E=recorder.port)
    with contextlib.suppress(TaskError):
        ls_resolver(label_studio).read(url, 1)
    assert tokens_seen(recorder) == []


def test_allowlist_is_not_bypassed_by_parser_differentials(
    servers: tuple[FakeLabelStudio, FakeServer],
) -> None:
    label_studio, recorder = servers
    images = ls_resolver(label_studio, allowed_image_hosts=("localhost",))
    for shape in PARSER_DIFFERENTIAL_SHAPES:
        with contextlib.suppress(TaskError):
            images.read(shape.format(L=label_studio.port, E=recorder.port), 1)
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://a.example\\@ls:8080/x.png", "backslash"),
        ("http://user:pw@ls:8080/x.png", "user names and passwords"),
        ("http://ls:8080\t/x.png", "control character"),
        ("http://ls:99999/x.png", "port '99999'"),
        ("http://ls:0/x.png", "port '0'"),
        ("http://ls:8o8o/x.png", "port '8o8o'"),
        ("http://[::1/x.png", "malformed IPv6"),
        ("http://[1.2.3.4]/x.png", "malformed IPv6 address"),
        ("http://[fe80::1%25eth0]/x.png", "zone ids"),
        ("http://bücher.example/x.png", "plain ASCII"),
        ("http://ls%2eexample/x.png", "not a valid host name"),
        ("http://under_score/x.png", "not a valid host name"),
    ],
)
def test_ambiguous_urls_are_refused_with_the_reason(url: str, expected: str) -> None:
    with pytest.raises(AmbiguousURLError, match=expected):
        http_origin(url)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://LS:8080/x.png", Origin("http", "ls", 8080)),
        ("HTTPS://example.com/x.png", Origin("https", "example.com", 443)),
        ("http://[::1]:9/x.png", Origin("http", "::1", 9)),
        ("http://127.0.0.1/x.png?a=@b", Origin("http", "127.0.0.1", 80)),
        ("http://ls:8080/a@b/x.png", Origin("http", "ls", 8080)),
    ],
)
def test_origin_of_ordinary_urls(url: str, origin: Origin) -> None:
    assert http_origin(url) == origin


def test_label_studio_url_is_read_the_same_strict_way() -> None:
    from ml_backend.core.settings import SettingsError

    with pytest.raises(SettingsError, match=r"LABEL_STUDIO_URL=.*user names and passwords"):
        Settings.from_env({"LABEL_STUDIO_URL": "http://evil.example@label-studio:8080"})


# --- redirects -------------------------------------------------------------------------------------------


def test_redirect_from_label_studio_to_an_ambiguous_url_is_refused(
    servers: tuple[FakeLabelStudio, FakeServer],
) -> None:
    label_studio, recorder = servers
    label_studio.routes["/data/upload/1/moved.png"] = Route(
        status=302, headers={"Location": f"http://127.0.0.1:{recorder.port}\\@localhost:{label_studio.port}/a"}
    )
    with pytest.raises(AmbiguousURLError, match="backslash"):
        ls_resolver(label_studio).read("/data/upload/1/moved.png", 1)
    assert recorder.seen == []


def test_redirect_back_to_label_studio_regains_credentials_only_there(
    servers: tuple[FakeLabelStudio, FakeServer],
) -> None:
    label_studio, recorder = servers
    label_studio.routes["/data/upload/1/moved.png"] = Route(
        status=302, headers={"Location": f"http://127.0.0.1:{recorder.port}/bounce"}
    )
    recorder.routes["/bounce"] = Route(
        status=307, headers={"Location": f"http://localhost:{label_studio.port}{UPLOAD}"}
    )
    assert ls_resolver(label_studio).read("/data/upload/1/moved.png", 1) == IMAGE
    assert tokens_seen(recorder) == []
    assert [seen.headers.get("Authorization") for seen in label_studio.requests_to(UPLOAD)] == [f"Token {LEGACY_TOKEN}"]


# --- the address policy (Label Studio's own: public hosts by default) -------------------------------------


def test_no_allowlist_means_any_public_host_and_no_private_one(servers: tuple[FakeLabelStudio, FakeServer]) -> None:
    _, recorder = servers
    images = ImageResolver(Settings(fetch_timeout=5.0))
    with pytest.raises(BlockedAddressError, match=r"non-public address 127.0.0.1"):
        images.read(f"{recorder.url}{UPLOAD}", 1)
    assert recorder.seen == []
    allowed = ImageResolver(Settings(fetch_timeout=5.0, allow_private_image_addresses=True))
    assert allowed.read(f"{recorder.url}{UPLOAD}", 1) == IMAGE


def test_closed_and_open_private_ports_answer_alike(servers: tuple[FakeLabelStudio, FakeServer]) -> None:
    """No port-scan oracle: the address is refused before any connection is tried."""
    _, recorder = servers
    images = ImageResolver(Settings(fetch_timeout=5.0))
    messages = []
    for port in (recorder.port, 9):  # open, and (on loopback) closed
        with pytest.raises(BlockedAddressError) as refused:
            images.read(f"http://127.0.0.1:{port}/a.png", 1)
        messages.append(str(refused.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("images.example.com", True),
        ("a.images.example.com", True),
        ("evilimages.example.com", False),
        ("images.example.com.evil.net", False),
        ("example.com", False),
    ],
)
def test_wildcard_allowlist_respects_the_dot(host: str, allowed: bool) -> None:
    images = ImageResolver(Settings(allowed_image_hosts=("*.images.example.com", "images.example.com")))
    if allowed:
        assert images._hop_headers(f"http://{host}/a.png", None) == {}
    else:
        with pytest.raises(ImageSourceError, match="not in ALLOWED_IMAGE_HOSTS"):
            images._hop_headers(f"http://{host}/a.png", None)


# --- FETCH_TIMEOUT is one deadline ---------------------------------------------------------------------------


def test_trickled_body_is_cut_at_the_deadline(servers: tuple[FakeLabelStudio, FakeServer]) -> None:
    _, recorder = servers
    # 60 bytes, one every 0.1 s: 6 s to send, past a 1 s budget; every single read is quick.
    recorder.routes["/slow.png"] = Route(body=b"x" * 60, trickle_s=0.1)
    images = ImageResolver(Settings(fetch_timeout=1.0, allow_private_image_addresses=True))
    with pytest.raises(ImageFetchError, match=r"exceeded FETCH_TIMEOUT=1.0"):
        images.read(f"{recorder.url}/slow.png", 1)
    [seen] = recorder.seen
    # We hung up mid-body (about 10 bytes in) instead of reading all 60 and only then complaining.
    assert seen.body_bytes_sent < 40


@pytest.mark.parametrize("send_length", [True, False])
def test_trickled_body_without_length_is_not_taken_as_complete(
    servers: tuple[FakeLabelStudio, FakeServer], send_length: bool
) -> None:
    _, recorder = servers
    recorder.routes["/slow.png"] = Route(body=b"x" * 40, trickle_s=0.1, send_length=send_length)
    images = ImageResolver(Settings(fetch_timeout=1.0, allow_private_image_addresses=True))
    with pytest.raises(ImageFetchError, match="FETCH_TIMEOUT"):
        images.read(f"{recorder.url}/slow.png", 1)


def test_slow_redirect_hops_share_one_budget(servers: tuple[FakeLabelStudio, FakeServer]) -> None:
    _, recorder = servers
    for hop in range(5):
        recorder.routes[f"/hop{hop}"] = Route(status=302, delay_s=0.4, headers={"Location": f"/hop{hop + 1}"})
    recorder.routes["/hop5"] = Route(body=IMAGE, delay_s=0.4)
    images = ImageResolver(Settings(fetch_timeout=1.0, allow_private_image_addresses=True))
    with pytest.raises(ImageFetchError, match=r"FETCH_TIMEOUT|timed out"):
        images.read(f"{recorder.url}/hop0", 1)
    # Each hop alone is within the timeout; the budget ends the chain after about two of them.
    assert len(recorder.seen) < 5


def test_401_is_retried_once_with_a_fresh_token(servers: tuple[FakeLabelStudio, FakeServer]) -> None:
    from tests.backend.servers import PERSONAL_ACCESS_TOKEN

    label_studio, _ = servers
    label_studio.required_authorization = "Bearer never-valid"
    label_studio.routes["/api/token/refresh/"] = Route()
    label_studio.uploads["1/slow.png"] = IMAGE
    images = ImageResolver(
        Settings(
            label_studio_url=label_studio.url,
            label_studio_api_key=PERSONAL_ACCESS_TOKEN,
            fetch_timeout=5.0,
        )
    )
    with pytest.raises(ImageFetchError, match="HTTP 401"):
        images.read("/data/upload/1/slow.png", 1)
    # One retry after the 401, never a loop.
    assert len(label_studio.requests_to("/data/upload/")) == 2
