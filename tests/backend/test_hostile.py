"""A corpus of hostile and odd requests against the real app under gunicorn (one server for the module).

Each task case is sent between two good tasks: the hostile one must get its exact reason (and no
``result``, so Label Studio stores nothing), the good ones valid regions. Label-config and request
cases assert the answer of the whole request. docs/RELIABILITY.md lists the corpus as a table.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from converters.labelstudio import validate_regions
from tests.backend.gunicorn import Gunicorn, running_gunicorn
from tests.backend.servers import LEGACY_TOKEN, FakeLabelStudio, FakeServer, Route
from tests.backend.support import POLYGON_CONFIG, png_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD = ["/data/local-files/?d=good/scene0.png", "/data/local-files/?d=good/scene1.png"]
MAX_IMAGE_BYTES = 2_000_000
MAX_IMAGE_PIXELS = 1_000_000
MAX_TASKS = 20
MAX_REQUEST_BYTES = 1024 * 1024
LEARNT_IMAGES = 6


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds a few bytes of them: a pixel bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def odd_images() -> dict[str, bytes]:
    rng = np.random.default_rng(11)
    rgb = Image.open(io.BytesIO(png_bytes(21)))
    return {
        "gray.png": encoded(rgb.convert("L"), "PNG"),
        "rgba.png": encoded(rgb.convert("RGBA"), "PNG"),
        "palette.png": encoded(rgb.convert("P"), "PNG"),
        "sixteen-bit.png": encoded(Image.fromarray((rng.random((48, 64)) * 65535).astype(np.uint16)), "PNG"),
        "photo.jpg": encoded(rgb, "JPEG", quality=80),
        "photo.webp": encoded(rgb, "WEBP"),
        "animated.gif": encoded(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]),
    }


def hostile_files() -> dict[str, bytes]:
    good = png_bytes(22)
    return {
        "truncated.png": good[: len(good) // 2],
        "random.png": np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.png": b"",
        "text.png": b"just some text, not an image\n",
        "html.png": b"<!doctype html><html><body>login</body></html>",
        "svg.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "bomb.png": png_header_only(40_000, 40_000),
        "wide-bomb.png": png_header_only(1_000_001, 1),
        "bad-crc.png": good[: len(good) // 2] + bytes([good[len(good) // 2] ^ 0xFF]) + good[len(good) // 2 + 1 :],
        "big.bin": b"\0" * (MAX_IMAGE_BYTES + 1),
        "zip-as-png.png": b"PK\x03\x04" + b"\0" * 100,
    }


@dataclass
class Corpus:
    backend: Gunicorn
    label_studio: FakeLabelStudio
    recorder: FakeServer


@pytest.fixture(scope="module")
def corpus(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    work = tmp_path_factory.mktemp("hostile")
    root = work / "documents"
    (root / "good").mkdir(parents=True)
    (root / "odd").mkdir()
    (root / "bad").mkdir()
    (root / "folder.png").mkdir()
    for index in range(2):
        (root / "good" / f"scene{index}.png").write_bytes(png_bytes(500 + index))
    (root / "learn").mkdir()
    for index in range(LEARNT_IMAGES):  # images only webhooks see: no prediction segmented them
        (root / "learn" / f"scene{index}.png").write_bytes(png_bytes(600 + index))
    for name, data in odd_images().items():
        (root / "odd" / name).write_bytes(data)
    for name, data in hostile_files().items():
        (root / "bad" / name).write_bytes(data)
    (work / "secret.png").write_bytes(png_bytes(9))
    os.symlink(work / "secret.png", root / "bad" / "link-out.png")
    os.symlink("/etc/passwd", root / "bad" / "passwd.png")

    label_studio, recorder = FakeLabelStudio().start(), FakeServer().start()
    label_studio.required_authorization = f"Token {LEGACY_TOKEN}"
    serve_label_studio_routes(label_studio, recorder)
    settings = {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "EMERDIFF_NUM_SEGMENTS": "4",
        "CACHE_DIR": str(work / "cache"),
        "DATA_DIR": str(work / "data"),
        "LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": LEGACY_TOKEN,
        "FETCH_TIMEOUT": "2",
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "MAX_IMAGE_PIXELS": str(MAX_IMAGE_PIXELS),
        "MAX_TASKS_PER_REQUEST": str(MAX_TASKS),
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "GUNICORN_THREADS": "4",
    }
    try:
        with running_gunicorn(settings, work / "gunicorn.log") as backend:
            yield Corpus(backend, label_studio, recorder)
    finally:
        label_studio.stop()
        recorder.stop()


def serve_label_studio_routes(label_studio: FakeLabelStudio, recorder: FakeServer) -> None:
    routes = label_studio.routes
    routes["/api/projects/1/"] = Route(
        body=json.dumps({"id": 1, "title": "corpus", "label_config": POLYGON_CONFIG}).encode(),
        headers={"Content-Type": "application/json"},
    )
    routes["/data/upload/1/html.png"] = Route(body=b"<html>sign in</html>", headers={"Content-Type": "text/html"})
    routes["/data/upload/1/error.png"] = Route(status=500, body=b"boom")
    routes["/data/upload/1/forbidden.png"] = Route(status=403, body=b"no")
    for hop in range(7):
        routes[f"/data/upload/1/loop{hop}.png"] = Route(
            status=302, headers={"Location": f"/data/upload/1/loop{hop + 1}.png"}
        )
    routes["/data/upload/1/trickle.png"] = Route(body=png_bytes(1)[:80], trickle_s=0.1)
    routes["/data/upload/1/slow-headers.png"] = Route(body=b"x", delay_s=4)
    routes["/data/upload/1/declared-big.png"] = Route(
        body=b"x", headers={"Content-Length": str(MAX_IMAGE_BYTES * 10)}, send_length=False
    )
    routes["/data/upload/1/streamed-big.png"] = Route(body=b"\0" * (MAX_IMAGE_BYTES + 10), send_length=False)
    routes["/data/upload/1/gzip-bomb.png"] = Route(
        body=gzip.compress(b"\0" * (MAX_IMAGE_BYTES * 4)), headers={"Content-Encoding": "gzip"}
    )
    routes["/data/upload/1/to-private.png"] = Route(status=302, headers={"Location": f"{recorder.url}/a.png"})
    routes["/data/upload/1/to-file.png"] = Route(status=302, headers={"Location": "file:///etc/passwd"})
    routes["/data/upload/1/to-ambiguous.png"] = Route(
        status=302, headers={"Location": f"http://localhost:{recorder.port}\\@{label_studio.url[7:]}/x.png"}
    )
    recorder.routes["/a.png"] = Route(body=png_bytes(1))


def local(path: str) -> str:
    return f"/data/local-files/?d={path}"


# (case id, the task's image reference (or a whole task / data object), reason, text the error contains)
TASK_CASES: list[tuple[str, object, str, str]] = [
    # the task itself
    ("task is a string", "TASK:not a task", "task_data", "task must be a JSON object"),
    ("task is a number", "TASK:42", "task_data", "task must be a JSON object"),
    ("task is null", "TASK:null", "task_data", "task must be a JSON object"),
    ("task is a list", "TASK:list", "task_data", "task must be a JSON object"),
    ("data is a string", "DATA:string", "task_data", "task must be a JSON object with a 'data' object"),
    ("image field missing", "DATA:missing", "task_data", "no image URL in field 'image'"),
    ("image is a number", 12, "task_data", "no image URL in field 'image'"),
    ("image is a list", ["/data/upload/1/a.png"], "task_data", "no image URL in field 'image'"),
    ("image is an object", {"url": "x"}, "task_data", "no image URL in field 'image'"),
    ("image is empty", "", "task_data", "no image URL in field 'image'"),
    ("image is blank", "   ", "task_data", "no image URL in field 'image'"),
    # schemes
    ("file URL", "file:///etc/passwd", "image_source", "is not supported"),
    ("ftp URL", "ftp://example.com/a.png", "image_source", "is not supported"),
    ("data URI", "data:image/png;base64,iVBORw0KGgo=", "image_source", "is not supported"),
    ("javascript URI", "javascript:alert(1)", "image_source", "is not supported"),
    ("gopher URL", "gopher://127.0.0.1:6379/_INFO", "image_source", "is not supported"),
    ("relative path", "images/a.png", "image_source", "is not supported"),
    ("scheme-relative URL", "//127.0.0.1:9/a.png", "image_source", "is not supported"),
    # local files
    ("traversal", local("../../../../etc/passwd"), "image_source", "escapes LOCAL_FILES_DOCUMENT_ROOT"),
    ("encoded traversal", local("..%2F..%2F..%2Fetc%2Fpasswd"), "image_source", "escapes"),
    ("absolute path", local("/etc/passwd"), "image_fetch", "cannot be read"),
    ("last d= wins", local("good/scene0.png") + "&d=../../etc/passwd", "image_source", "escapes"),
    ("symlink out of the root", local("bad/link-out.png"), "image_source", "escapes"),
    ("symlink to /etc/passwd", local("bad/passwd.png"), "image_source", "escapes"),
    ("NUL byte in the path", local("good/scene0.png%00.txt"), "image_source", "contains a NUL byte"),
    ("empty d=", local(""), "image_source", "has no ?d= path"),
    ("folder", local("folder.png"), "image_fetch", "is not a regular file"),
    ("missing file", local("bad/nothing.png"), "image_fetch", "No such file"),
    ("file over MAX_IMAGE_BYTES", local("bad/big.bin"), "image_too_large", "exceeds MAX_IMAGE_BYTES"),
    # image contents
    ("truncated PNG", local("bad/truncated.png"), "image_decode", "corrupt or truncated"),
    ("random bytes", local("bad/random.png"), "image_decode", "format not recognised"),
    ("empty file", local("bad/empty.png"), "image_decode", "format not recognised"),
    ("text file", local("bad/text.png"), "image_decode", "format not recognised"),
    ("HTML file", local("bad/html.png"), "image_decode", "format not recognised"),
    ("SVG", local("bad/svg.png"), "image_decode", "format not recognised"),
    ("zip file", local("bad/zip-as-png.png"), "image_decode", "format not recognised"),
    ("pixel bomb", local("bad/bomb.png"), "image_decode", "too many pixels to decode safely"),
    ("wide pixel bomb", local("bad/wide-bomb.png"), "image_decode", f"exceeds the limit of {MAX_IMAGE_PIXELS} pixels"),
    ("PNG with a bad CRC", local("bad/bad-crc.png"), "image_decode", "corrupt or truncated"),
    # addresses
    ("loopback", "http://127.0.0.1:9/a.png", "image_source", "non-public address 127.0.0.1"),
    ("cloud metadata", "http://169.254.169.254/latest/meta-data/", "image_source", "non-public address"),
    ("private network", "http://10.0.0.1/a.png", "image_source", "non-public address 10.0.0.1"),
    ("IPv6 loopback", "http://[::1]:9/a.png", "image_source", "non-public address ::1"),
    ("IPv4-mapped IPv6", "http://[::ffff:127.0.0.1]:9/a.png", "image_source", "non-public address"),
    ("integer host", "http://2130706433:9/a.png", "image_source", "non-public address 127.0.0.1"),
    ("hex host", "http://0x7f000001:9/a.png", "image_source", "non-public address 127.0.0.1"),
    ("localhost", "http://localhost:9/a.png", "image_source", "non-public address"),
    ("unspecified address", "http://0.0.0.0:9/a.png", "image_source", "non-public address 0.0.0.0"),
    # ambiguous URLs
    ("backslash userinfo", "http://evil.example\\@127.0.0.1:9/a.png", "image_source", "backslash"),
    ("userinfo", "http://user:pass@example.com/a.png", "image_source", "user names and passwords"),
    ("tab in host", "http://exam\tple.com/a.png", "image_source", "control character"),
    ("port out of range", "http://example.com:99999/a.png", "image_source", "port '99999'"),
    ("malformed IPv6", "http://[::1/a.png", "image_source", "malformed IPv6"),
    ("IPv6 zone id", "http://[fe80::1%25eth0]/a.png", "image_source", "zone ids"),
    ("non-ASCII host", "http://exämple.com/a.png", "image_source", "plain ASCII"),
    # Label Studio's files
    ("missing upload", "/data/upload/1/nothing.png", "image_fetch", "HTTP 404"),
    ("upload answering 500", "/data/upload/1/error.png", "image_fetch", "HTTP 500"),
    ("upload answering 403", "/data/upload/1/forbidden.png", "image_fetch", "HTTP 403"),
    ("HTML login page", "/data/upload/1/html.png", "image_decode", "format not recognised"),
    ("redirect loop", "/data/upload/1/loop0.png", "image_fetch", "more than 5 redirects"),
    ("trickled body", "/data/upload/1/trickle.png", "image_fetch", "exceeded FETCH_TIMEOUT=2.0"),
    ("slow headers", "/data/upload/1/slow-headers.png", "image_fetch", "FETCH_TIMEOUT=2.0"),
    ("declared too big", "/data/upload/1/declared-big.png", "image_too_large", "exceeds MAX_IMAGE_BYTES"),
    ("streamed too big", "/data/upload/1/streamed-big.png", "image_too_large", "more than MAX_IMAGE_BYTES"),
    ("gzip bomb", "/data/upload/1/gzip-bomb.png", "image_too_large", "more than MAX_IMAGE_BYTES"),
    ("redirect to a private host", "/data/upload/1/to-private.png", "image_source", "non-public address"),
    ("redirect to file://", "/data/upload/1/to-file.png", "image_source", "only absolute http"),
    ("redirect to an ambiguous URL", "/data/upload/1/to-ambiguous.png", "image_source", "backslash"),
    ("cloud URI without presigning", "s3://bucket/a.png", "image_fetch", "HTTP 404"),
    ("cloud URI of a task without id", "TASKID:s3://bucket/a.png", "image_source", "integer id"),
]

ODD_BUT_VALID = ["gray.png", "rgba.png", "palette.png", "sixteen-bit.png", "photo.jpg", "photo.webp", "animated.gif"]


def hostile_task(reference: object) -> object:
    """The task of a case: most put ``reference`` into data.image; prefixed strings shape the task itself."""
    special = {
        "TASK:not a task": "not a task",
        "TASK:42": 42,
        "TASK:null": None,
        "TASK:list": [1, 2],
        "DATA:string": {"id": 2, "data": "image.png"},
        "DATA:missing": {"id": 2, "data": {"text": "hello"}},
    }
    if isinstance(reference, str) and reference in special:
        return special[reference]
    if isinstance(reference, str) and reference.startswith("TASKID:"):
        return {"id": "two", "data": {"image": reference.removeprefix("TASKID:")}}
    return {"id": 2, "data": {"image": reference}}


def post_predict(backend: Gunicorn, tasks: list[object], label_config: str = POLYGON_CONFIG) -> list[dict]:
    response = requests.post(
        f"{backend.url}/predict", json={"tasks": tasks, "label_config": label_config, "project": "1.1"}, timeout=120
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(tasks)
    return results


def assert_good(result: dict, label_config: str = POLYGON_CONFIG) -> None:
    assert "error" not in result, result
    assert result["result"]
    validate_regions(result["result"], label_config)


@pytest.mark.parametrize(
    ("reference", "reason", "expected"),
    [pytest.param(reference, reason, expected, id=name) for name, reference, reason, expected in TASK_CASES],
)
def test_hostile_task_fails_alone(corpus: Corpus, reference: object, reason: str, expected: str) -> None:
    tasks = [{"id": 1, "data": {"image": GOOD[0]}}, hostile_task(reference), {"id": 3, "data": {"image": GOOD[1]}}]
    first, hostile, last = post_predict(corpus.backend, tasks)
    assert_good(first)
    assert_good(last)
    assert set(hostile) == {"model_version", "error"}, hostile  # no "result": Label Studio stores nothing
    assert hostile["model_version"] == first["model_version"]
    assert hostile["error"].startswith(f"{reason}: "), hostile["error"]
    assert expected in hostile["error"], hostile["error"]
    assert corpus.recorder.seen == [] or all("Authorization" not in seen.headers for seen in corpus.recorder.seen)


@pytest.mark.parametrize("name", ODD_BUT_VALID)
def test_odd_but_valid_images_get_regions(corpus: Corpus, name: str) -> None:
    tasks = [{"id": 1, "data": {"image": GOOD[0]}}, {"id": 2, "data": {"image": local(f"odd/{name}")}}]
    for result in post_predict(corpus.backend, tasks):
        assert_good(result)


def config_with(attributes: str = "", *, body: str | None = None) -> str:
    return body or (
        '<View><Image name="image" value="$image"/>'
        f'<PolygonLabels name="poly" toName="image" {attributes}><Label value="A"/></PolygonLabels></View>'
    )


# Nine levels of ten: 10^9 "lol"s once expanded; libxml2's amplification limit refuses it.
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10))
    + ']><View><Image name="image" value="$image"/><PolygonLabels name="p" toName="image">'
    '<Label value="&lol9;"/></PolygonLabels></View>'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<View><Image name="image" value="$image"/><PolygonLabels name="p" toName="image">'
    '<Label value="&x;"/></PolygonLabels></View>'
)

# (case id, label config, text the error of every task contains)
CONFIG_CASES = [
    ("billion laughs", BILLION_LAUGHS, "Maximum entity amplification factor exceeded"),
    ("external entity", EXTERNAL_ENTITY, "Entity 'x' not defined"),
    ("not XML", "<View><Image", "not valid Label Studio XML"),
    ("no mask control", '<View><Image name="image" value="$image"/></View>', "no <PolygonLabels> or <BrushLabels>"),
    ("polygons on text", config_with(body=(
        '<View><Text name="t" value="$text"/><PolygonLabels name="p" toName="t"><Label value="A"/></PolygonLabels>'
        "</View>"
    )), "is a <Text>, but EmerDiff pre-annotates <Image> objects only"),
    ("absurd tolerance", config_with('emerdiff-tolerance="1e308"'), "between 0.0 and 1000.0"),
    ("absurd min area", config_with('emerdiff-min-area="99999999999"'), "between 0 and 100000000"),
    ("negative segments", config_with('emerdiff-segments="-1"'), "between 1 and 100"),
    ("unknown attribute", config_with('emerdiff-evil="1"'), "unknown attribute(s) emerdiff-evil"),
    ("no labels", config_with(body=(
        '<View><Image name="image" value="$image"/><PolygonLabels name="p" toName="image"/></View>'
    )), "has no <Label> children"),
    ("five segmentations", config_with(body='<View><Image name="image" value="$image"/>' + "".join(
        f'<BrushLabels name="b{area}" toName="image" emerdiff-min-area="{area}"><Label value="A"/></BrushLabels>'
        for area in range(5)
    ) + "</View>"), "MAX_SEGMENTATIONS_PER_TASK=2"),
]


@pytest.mark.parametrize(
    ("label_config", "expected"),
    [pytest.param(config, expected, id=name) for name, config, expected in CONFIG_CASES],
)
def test_hostile_label_config_fails_every_task_and_setup(corpus: Corpus, label_config: str, expected: str) -> None:
    results = post_predict(corpus.backend, [{"id": 1, "data": {"image": GOOD[0]}}] * 2, label_config)
    for result in results:
        assert set(result) == {"model_version", "error"}
        assert result["error"].startswith("label_config: ") and expected in result["error"], result["error"]
    setup = requests.post(f"{corpus.backend.url}/setup", json={"schema": label_config}, timeout=30)
    assert setup.status_code == 400 and expected in setup.json()["error"]
    # The server is still whole: a good request right after gets regions.
    [good] = post_predict(corpus.backend, [{"id": 1, "data": {"image": GOOD[0]}}])
    assert_good(good)


# (case id, method, route, body bytes, content type, status, text the JSON error contains)
REQUEST_CASES = [
    ("not JSON", "POST", "/predict", b"{tasks:", "application/json", 400, "must be a JSON object"),
    ("JSON array", "POST", "/predict", b"[1, 2]", "application/json", 400, "must be a JSON object"),
    ("not UTF-8", "POST", "/predict", b'{"tasks": "\xff\xfe"}', "application/json", 400, "must be a JSON object"),
    ("wrong content type", "POST", "/predict", b'{"tasks": []}', "text/plain", 400, "must be a JSON object"),
    ("tasks not a list", "POST", "/predict", b'{"tasks": {}, "label_config": "<View/>"}', "application/json", 400,
     "'tasks' must be a list"),
    ("no label config", "POST", "/predict", b'{"tasks": []}', "application/json", 400, "'label_config' must be"),
    ("params not an object", "POST", "/predict", b'{"tasks": [], "label_config": "<View/>", "params": 3}',
     "application/json", 400, "'params' must be an object"),
    ("too many tasks", "POST", "/predict",
     ('{"tasks": [' + ",".join(["{}"] * (MAX_TASKS + 1)) + '], "label_config": "<View/>"}').encode(),
     "application/json", 400, f"exceed MAX_TASKS_PER_REQUEST={MAX_TASKS}"),
    ("body too large", "POST", "/predict", b'{"tasks": [], "x": "' + b"a" * MAX_REQUEST_BYTES + b'"}',
     "application/json", 413, "Request Entity Too Large"),
    ("deeply nested", "POST", "/predict", b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "application/json", 400, "nested too deeply"),
    ("GET /predict", "GET", "/predict", b"", "application/json", 405, "Method Not Allowed"),
    ("unknown route", "GET", "/admin", b"", "application/json", 404, "Not Found"),
    ("webhook without action", "POST", "/webhook", b"{}", "application/json", 400, "'action' must be"),
    ("setup not JSON", "POST", "/setup", b"<xml/>", "application/xml", 400, "must be a JSON object"),
]


@pytest.mark.parametrize(
    ("method", "route", "body", "content_type", "status", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in REQUEST_CASES],
)
def test_hostile_request_gets_a_json_error(
    corpus: Corpus, method: str, route: str, body: bytes, content_type: str, status: int, expected: str
) -> None:
    response = requests.request(
        method, f"{corpus.backend.url}{route}", data=body, headers={"Content-Type": content_type}, timeout=60
    )
    assert response.status_code == status, response.text
    assert expected in response.json()["error"]
    assert requests.get(f"{corpus.backend.url}/health", timeout=10).json()["status"] == "UP"


SMART_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="poly" toName="image"><Label value="Object"/></PolygonLabels>'
    '<KeyPointLabels name="point" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>'
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Object"/></RectangleLabels></View>'
)


def smart(kind: str, **value: object) -> dict:
    label_key = "keypointlabels" if kind == "point" else "rectanglelabels"
    return {"from_name": kind, "to_name": "image", "type": label_key, "original_width": 64, "original_height": 48,
            "value": {label_key: ["Object"], **value}}


# (case id, context.result, text every task's context error contains)
SMART_CASES = [
    ("keypoint beyond a float", [smart("point", x=10**400, y=5)], "value.x must be a finite number"),
    ("rectangle overflowing in pixels", [smart("box", x=1.7e308, y=1.7e308, width=1.7e308, height=1.7e308)],
     "smart rectangle"),
    ("more prompts than MAX_SMART_PROMPTS", [smart("point", x=50, y=50)] * 101, "MAX_SMART_PROMPTS=100"),
]


@pytest.mark.parametrize(("result", "expected"), [pytest.param(r, e, id=name) for name, r, e in SMART_CASES])
def test_hostile_smart_tool_context_is_a_context_error(corpus: Corpus, result: list, expected: str) -> None:
    response = requests.post(f"{corpus.backend.url}/predict", json={
        "tasks": [{"id": 1, "data": {"image": GOOD[0]}}, {"id": 3, "data": {"image": GOOD[1]}}],
        "label_config": SMART_CONFIG, "project": "1.1", "params": {"context": {"result": result}},
    }, timeout=120)
    assert response.status_code == 200, response.text
    for entry in response.json()["results"]:
        assert set(entry) == {"model_version", "error"}, entry
        assert entry["error"].startswith("context: ") and expected in entry["error"], entry["error"]


def background_count(corpus: Corpus, event: str) -> float:
    metrics = requests.get(f"{corpus.backend.url}/metrics", timeout=10).text
    prefix = f'emerdiff_background_total{{name="learning_{event}"}} '
    return sum(float(line.removeprefix(prefix)) for line in metrics.splitlines() if line.startswith(prefix))


def test_webhooks_for_unsegmented_images_are_learnt_in_the_background(corpus: Corpus) -> None:
    """Annotation webhooks that need new segmentations are answered at once (202) and /health keeps
    answering while they are learnt; Label Studio's config (not the body's) checks the labels."""
    done_before = background_count(corpus, "done")
    answers: list[int] = []
    health: list[int] = []
    stop = threading.Event()

    def post(index: int) -> None:
        region = {"id": f"r{index}", "from_name": "poly", "to_name": "image", "type": "polygonlabels",
                  "original_width": 64, "original_height": 48,
                  "value": {"points": [[10, 10], [60, 10], [60, 60], [10, 60]], "polygonlabels": ["Object"]}}
        body = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": "<View/>"},
                "annotation": {"id": 100 + index, "task": 100 + index, "result": [region]},
                "task": {"id": 100 + index, "data": {"image": local(f"learn/scene{index}.png")}}}
        answers.append(requests.post(f"{corpus.backend.url}/webhook", json=body, timeout=60).status_code)

    def poll_health() -> None:
        while not stop.is_set():
            health.append(requests.get(f"{corpus.backend.url}/health", timeout=30).status_code)

    poller = threading.Thread(target=poll_health)
    poller.start()
    posters = [threading.Thread(target=post, args=(index,)) for index in range(LEARNT_IMAGES)]
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join()
    try:
        assert answers == [202] * LEARNT_IMAGES
        deadline = time.monotonic() + 300
        while background_count(corpus, "done") < done_before + LEARNT_IMAGES:
            assert time.monotonic() < deadline, "the background learner never finished"
            time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    assert health and set(health) == {200}
    # Every one learnt: no webhook failure of any reason was counted (the learner counts what it could not learn).
    assert "emerdiff_webhook_failures_total{" not in requests.get(f"{corpus.backend.url}/metrics", timeout=10).text


# Project ids Label Studio never sends (issue 19): "²" passes str.isdigit() and fails int(); the others exceed
# SQLite's 64-bit integers. /setup and /predict answer as for a project with nothing learnt (after the webhook
# test above: the label memory exists, so the ids reach SQLite).
ODD_PROJECT_IDS = ["²", "²1.1700000000", f"{2**64}.1700000000", str(2**64), 2**64, -1]


@pytest.mark.parametrize("project", ODD_PROJECT_IDS, ids=[str(p) for p in ODD_PROJECT_IDS])
def test_odd_project_ids_on_setup_and_predict(corpus: Corpus, project: object) -> None:
    setup = requests.post(f"{corpus.backend.url}/setup", json={"schema": POLYGON_CONFIG, "project": project},
                          timeout=30)
    assert setup.status_code == 200, setup.text
    response = requests.post(f"{corpus.backend.url}/predict", json={
        "tasks": [{"id": 1, "data": {"image": GOOD[0]}}], "label_config": POLYGON_CONFIG, "project": project,
    }, timeout=120)
    assert response.status_code == 200, response.text
    assert_good(response.json()["results"][0])


def test_the_token_never_left_label_studio(corpus: Corpus) -> None:
    """After the whole corpus (module order): the other host never saw Label Studio's token."""
    for seen in corpus.recorder.seen:
        assert LEGACY_TOKEN not in str(seen.headers)
    metrics = requests.get(f"{corpus.backend.url}/metrics", timeout=10).text
    assert 'emerdiff_task_errors_total{reason="image_source"}' in metrics
    assert 'emerdiff_task_errors_total{reason="internal"}' not in metrics
