"""Uploads on cloud-backed storage: Label Studio serves them at ``<HOSTNAME>/storage-data/uploaded/?filepath=``."""

from __future__ import annotations

import pytest

from ml_backend.core.errors import ImageFetchError, ImageSourceError
from ml_backend.core.settings import Settings
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import LEGACY_TOKEN, FakeLabelStudio, FakeServer, Route
from tests.backend.support import png_bytes

IMAGE = png_bytes(6)
PROXY = "/storage-data/uploaded/?filepath=upload/1/0a1b2c3d-scene.png"


@pytest.fixture
def images(label_studio: FakeLabelStudio) -> ImageResolver:
    label_studio.routes[PROXY] = Route(body=IMAGE)
    label_studio.required_authorization = f"Token {LEGACY_TOKEN}"
    return ImageResolver(
        Settings(fetch_timeout=5.0, label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    )


def test_relative_storage_data_url_is_read_from_label_studio(
    images: ImageResolver, label_studio: FakeLabelStudio
) -> None:
    assert images.read(PROXY) == IMAGE


def test_public_hostname_url_is_read_from_label_studio_url(
    images: ImageResolver, label_studio: FakeLabelStudio, file_host: FakeServer
) -> None:
    # Label Studio writes the URL with its public HOSTNAME; the backend reaches it at LABEL_STUDIO_URL.
    file_host.routes[PROXY] = Route(body=b"the public host must never be asked")
    assert images.read(f"{file_host.url}{PROXY}") == IMAGE
    assert images.read(f"https://labelstudio.example.com{PROXY}") == IMAGE
    assert file_host.seen == []  # the host in the URL got nothing, the token least of all
    assert [seen.headers["Authorization"] for seen in label_studio.requests_to("/storage-data/")] == [
        f"Token {LEGACY_TOKEN}"
    ] * 2


def test_only_label_studios_upload_shape_is_read_that_way(
    images: ImageResolver, file_host: FakeServer
) -> None:
    # Another path, or another filepath, on a foreign host stays a plain download from that host.
    other = "/storage-data/uploaded/?filepath=avatars/me.png"
    file_host.routes[other] = Route(body=IMAGE)
    with pytest.raises(ImageSourceError, match="non-public address"):
        images.read(f"{file_host.url}{other}")


def test_storage_data_without_label_studio_url_says_so() -> None:
    images = ImageResolver(Settings(fetch_timeout=5.0))
    with pytest.raises(ImageSourceError, match="LABEL_STUDIO_URL is not set"):
        images.read(f"https://labelstudio.example.com{PROXY}")


def test_an_nginx_hand_off_is_a_clear_error(images: ImageResolver, label_studio: FakeLabelStudio) -> None:
    # Label Studio's default USE_NGINX_FOR_UPLOADS answers 200, empty, for its nginx to fill in.
    label_studio.routes[PROXY] = Route(headers={"X-Accel-Redirect": "/file_download/s3/bucket/upload/1/x.png"})
    with pytest.raises(ImageFetchError, match=r"X-Accel-Redirect.*USE_NGINX_FOR_UPLOADS=false"):
        images.read(PROXY)
