"""Quick tests of the defences that hand-breaking once let through (see issue #8 and docs/RELIABILITY.md).

Where a defence guards against a failure the real components do not produce on demand (a bug, a
segmentor crash), the failure is injected into a collaborator; the defence itself always runs for real.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from ml_backend import model as model_module
from ml_backend.core.errors import ImageFetchError
from ml_backend.core.settings import Settings
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import PERSONAL_ACCESS_TOKEN, FakeLabelStudio, FakeServer, Route, fake_jwt
from tests.backend.support import BRUSH_CONFIG, POLYGON_CONFIG, png_bytes, predict, task

SCENES = [f"/data/local-files/?d=images/scene{seed}.png" for seed in range(3)]


@pytest.fixture
def client(make_client: Callable[..., FlaskClient], document_root: Path) -> FlaskClient:
    return make_client(local_files_document_root=document_root.resolve())


def test_last_d_of_a_local_files_url_wins(document_root: Path) -> None:
    images = ImageResolver(Settings(local_files_document_root=document_root.resolve()))
    data = images.read("/data/local-files/?d=images/scene0.png&d=images/scene1.png", 1)
    assert data == (document_root / "images" / "scene1.png").read_bytes()


def test_proxy_variables_are_ignored(file_host: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FakeServer().start()
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        file_host.routes["/a.png"] = Route(body=b"image")
        images = ImageResolver(Settings(allow_private_image_addresses=True))
        assert images.read(f"{file_host.url}/a.png", 1) == b"image"
        assert proxy.seen == []
    finally:
        proxy.stop()


def test_redirects_are_capped(file_host: FakeServer) -> None:
    for hop in range(10):
        file_host.routes[f"/hop{hop}"] = Route(status=302, headers={"Location": f"/hop{hop + 1}"})
    images = ImageResolver(Settings(allow_private_image_addresses=True))
    with pytest.raises(ImageFetchError, match="more than 5 redirects"):
        images.read(f"{file_host.url}/hop0", 1)
    assert len(file_host.seen) == 6


def test_personal_access_token_is_renewed_before_it_expires(label_studio: FakeLabelStudio) -> None:
    import time

    # Each access token expires within the renewal margin: every download must exchange first.
    expiring = [fake_jwt({"token_type": "access", "exp": int(time.time()) + 5, "jti": str(n)}) for n in range(3)]
    label_studio.access_tokens = list(expiring)
    label_studio.uploads["1/a.png"] = b"image"
    images = ImageResolver(Settings(label_studio_url=label_studio.url, label_studio_api_key=PERSONAL_ACCESS_TOKEN))
    for _ in range(2):
        assert images.read("/data/upload/1/a.png", 1) == b"image"
    assert len(label_studio.requests_to("/api/token/refresh/")) == 2
    sent = [seen.headers["Authorization"] for seen in label_studio.requests_to("/data/upload/")]
    assert sent == [f"Bearer {expiring[0]}", f"Bearer {expiring[1]}"]


def test_version_follows_max_vertices(client: FlaskClient) -> None:
    def version(attributes: str) -> str:
        config = POLYGON_CONFIG.replace('toName="image"', f'toName="image" {attributes}')
        return client.post("/setup", json={"schema": config}).json["model_version"]

    assert version('emerdiff-max-vertices="12"') != version('emerdiff-max-vertices="13"')


def test_score_is_the_mean_of_the_segment_scores(client: FlaskClient) -> None:
    results = predict(client, [task(1, SCENES[0]), task(2, SCENES[1])], BRUSH_CONFIG)
    for result in results:  # brush: one region per segment, each with its segment's score
        assert result["score"] == pytest.approx(np.mean([region["score"] for region in result["result"]]))
    assert results[0]["score"] != results[1]["score"]


def test_a_bug_in_one_task_costs_that_task_only(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    images = client.application.extensions["emerdiff"].images
    read = images.read

    def buggy(reference: str, task_id: object = None) -> bytes:
        if task_id == 2:
            raise KeyError("a bug")
        return read(reference, task_id)

    monkeypatch.setattr(images, "read", buggy)
    first, broken, last = predict(client, [task(1, SCENES[0]), task(2, SCENES[1]), task(3, SCENES[2])])
    assert first["result"] and last["result"]
    assert broken == {"model_version": first["model_version"], "error": "internal: 'a bug'"}


def test_a_segmentor_crash_is_reported_as_segmentation(
    make_client: Callable[..., FlaskClient], document_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(local_files_document_root=document_root.resolve(), cache_dir=None)
    service = client.application.extensions["emerdiff"].segmentation
    segmentor = service.segmentor(service.default_params())

    def out_of_memory(image: np.ndarray) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(segmentor, "segment", out_of_memory)
    (document_root / "new.png").write_bytes(png_bytes(4242))
    [result] = predict(client, [task(1, "/data/local-files/?d=new.png")])
    assert result["error"] == "segmentation: segmentation failed: RuntimeError: CUDA out of memory"


def test_invalid_regions_are_never_sent(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    make_regions = model_module.regions_from_label_map

    def with_a_foreign_label(*args: object, **kwargs: object) -> list[dict]:
        regions = make_regions(*args, **kwargs)
        regions[0]["value"][regions[0]["type"]] = ["Not a label of this config"]
        return regions

    monkeypatch.setattr(model_module, "regions_from_label_map", with_a_foreign_label)
    [result] = predict(client, [task(1, SCENES[0])])
    assert "result" not in result
    assert result["error"].startswith("invalid_region: our regions failed validation")


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("http://[::1/a.png", "image_source: image reference 'http://[::1/a.png': malformed IPv6 address"),
        ("/data/local-files/?d=images/scene0.png%00.txt", "image_source: local-files path"),
    ],
)
def test_malformed_references_get_their_reason_not_internal(client: FlaskClient, reference: str, expected: str) -> None:
    [result] = predict(client, [task(1, reference)])
    assert result["error"].startswith(expected)
