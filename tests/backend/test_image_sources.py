"""Every image source through the real resolver, against real servers on 127.0.0.1."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from ml_backend.core.errors import (
    BlockedAddressError,
    ImageFetchError,
    ImageSourceError,
    ImageTooLargeError,
)
from ml_backend.core.settings import Settings
from ml_backend.images.credentials import jwt_claims
from ml_backend.images.fetch import is_public_address
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import (
    ACCESS_TOKEN,
    LEGACY_TOKEN,
    PERSONAL_ACCESS_TOKEN,
    FakeLabelStudio,
    FakeServer,
    Route,
    fake_jwt,
)
from tests.backend.support import png_bytes

IMAGE = png_bytes(1)


def resolver(**overrides: object) -> ImageResolver:
    return ImageResolver(Settings(fetch_timeout=5.0, **overrides))


# --- Label Studio uploads and credentials -------------------------------------------------------------


def test_upload_with_legacy_token(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["1/abc-scene.png"] = IMAGE
    label_studio.required_authorization = f"Token {LEGACY_TOKEN}"
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    assert images.read("/data/upload/1/abc-scene.png", 7) == IMAGE
    [seen] = label_studio.requests_to("/data/upload/")
    assert seen.headers["Authorization"] == f"Token {LEGACY_TOKEN}"


def test_upload_with_personal_access_token_exchanges_it_once(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["1/abc-scene.png"] = IMAGE
    label_studio.required_authorization = f"Bearer {ACCESS_TOKEN}"
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=PERSONAL_ACCESS_TOKEN)
    for _ in range(2):
        assert images.read("/data/upload/1/abc-scene.png", 7) == IMAGE
    [refresh] = label_studio.requests_to("/api/token/refresh/")
    assert refresh.method == "POST" and PERSONAL_ACCESS_TOKEN in refresh.body.decode()
    assert [seen.headers["Authorization"] for seen in label_studio.requests_to("/data/upload/")] == [
        f"Bearer {ACCESS_TOKEN}"
    ] * 2


def test_access_token_refused_mid_way_is_exchanged_again(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["1/abc-scene.png"] = IMAGE
    renewed = fake_jwt({"token_type": "access", "exp": 4102444800, "user_id": 1, "jti": "second"})
    label_studio.access_tokens = [ACCESS_TOKEN, renewed]
    label_studio.required_authorization = f"Bearer {renewed}"  # the first access token was revoked
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=PERSONAL_ACCESS_TOKEN)
    assert images.read("/data/upload/1/abc-scene.png", 7) == IMAGE
    assert len(label_studio.requests_to("/api/token/refresh/")) == 2


def test_refused_personal_access_token_is_a_clear_fetch_error(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["1/a.png"] = IMAGE
    # JWT-shaped, so it is exchanged; the server knows it not (a revoked token).
    revoked = resolver(label_studio_url=label_studio.url, label_studio_api_key=ACCESS_TOKEN)
    with pytest.raises(ImageFetchError, match="refused the personal access token"):
        revoked.read("/data/upload/1/a.png", 1)
    assert label_studio.requests_to("/data/upload/") == []


def test_absolute_url_on_label_studio_origin_gets_credentials(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["2/x.png"] = IMAGE
    label_studio.required_authorization = f"Token {LEGACY_TOKEN}"
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    assert images.read(f"{label_studio.url}/data/upload/2/x.png", 1) == IMAGE


def test_label_studio_url_unset_is_a_source_error() -> None:
    with pytest.raises(ImageSourceError, match="LABEL_STUDIO_URL is not set"):
        resolver().read("/data/upload/1/a.png", 1)


def test_missing_upload_is_a_fetch_error_with_status(label_studio: FakeLabelStudio) -> None:
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    with pytest.raises(ImageFetchError, match="HTTP 404") as caught:
        images.read("/data/upload/1/missing.png", 1)
    assert caught.value.status == 404


# --- local files -----------------------------------------------------------------------------------------


def test_local_files_read_from_document_root(document_root: Path) -> None:
    images = resolver(local_files_document_root=document_root.resolve())
    expected = (document_root / "images" / "scene0.png").read_bytes()
    assert images.read("/data/local-files/?d=images/scene0.png", 1) == expected
    assert images.read("/data/local-files/?d=/images%2Fscene0.png", 1) == expected


@pytest.mark.parametrize("path", ["../outside.png", "images/../../outside.png", "images/link.png"])
def test_local_files_cannot_escape_the_root(document_root: Path, path: str) -> None:
    outside = document_root.parent / "outside.png"
    outside.write_bytes(IMAGE)
    os.symlink(outside, document_root / "images" / "link.png")
    images = resolver(local_files_document_root=document_root.resolve())
    with pytest.raises(ImageSourceError, match="escapes LOCAL_FILES_DOCUMENT_ROOT"):
        images.read(f"/data/local-files/?d={path}", 1)


def test_local_file_missing_or_too_big(document_root: Path) -> None:
    images = resolver(local_files_document_root=document_root.resolve(), max_image_bytes=100)
    with pytest.raises(ImageFetchError, match="cannot be read"):
        images.read("/data/local-files/?d=images/nope.png", 1)
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_BYTES=100"):
        images.read("/data/local-files/?d=images/scene0.png", 1)


def test_local_files_without_root_come_from_label_studio(label_studio: FakeLabelStudio) -> None:
    label_studio.routes["/data/local-files/?d=images/scene0.png"] = Route(body=IMAGE)
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    assert images.read("/data/local-files/?d=images/scene0.png", 1) == IMAGE
    assert label_studio.seen[0].headers["Authorization"] == f"Token {LEGACY_TOKEN}"


# --- cloud storage via presigning -----------------------------------------------------------------------


def test_cloud_uri_is_presigned_and_storage_gets_no_credentials(
    label_studio: FakeLabelStudio, file_host: FakeServer
) -> None:
    label_studio.presign_target = file_host.url
    file_host.routes["/bucket/scene.png"] = Route(body=IMAGE)
    images = resolver(
        label_studio_url=label_studio.url,
        label_studio_api_key=LEGACY_TOKEN,
        allow_private_image_addresses=True,
    )
    assert images.read("s3://bucket/scene.png", 42) == IMAGE
    [presign] = label_studio.requests_to("/tasks/")
    encoded = base64.urlsafe_b64encode(b"s3://bucket/scene.png").decode()
    assert presign.path == f"/tasks/42/presign/?fileuri={encoded.replace('=', '%3D')}"
    assert presign.headers["Authorization"] == f"Token {LEGACY_TOKEN}"
    assert "Authorization" not in file_host.seen[0].headers


def test_presign_redirect_to_a_private_address_is_refused(
    label_studio: FakeLabelStudio, file_host: FakeServer
) -> None:
    label_studio.presign_target = file_host.url
    images = resolver(label_studio_url=label_studio.url, label_studio_api_key=LEGACY_TOKEN)
    with pytest.raises(BlockedAddressError, match=r"non-public address 127\.0\.0\.1"):
        images.read("gs://bucket/scene.png", 42)
    assert file_host.seen == []


def test_cloud_uri_needs_a_task_id(label_studio: FakeLabelStudio) -> None:
    with pytest.raises(ImageSourceError, match="task's integer id"):
        resolver(label_studio_url=label_studio.url).read("azure-blob://container/a.png", None)


# --- plain http(s) URLs ---------------------------------------------------------------------------------


def test_allowed_host_is_downloaded_without_credentials(
    label_studio: FakeLabelStudio, file_host: FakeServer
) -> None:
    file_host.routes["/a.png"] = Route(body=IMAGE)
    images = resolver(
        allowed_image_hosts=("127.0.0.1",),
        allow_private_image_addresses=True,
        label_studio_url=label_studio.url,
        label_studio_api_key=LEGACY_TOKEN,
    )
    assert images.read(f"{file_host.url}/a.png", 1) == IMAGE
    assert "Authorization" not in file_host.seen[0].headers


def test_host_outside_the_allowed_list_is_refused(file_host: FakeServer) -> None:
    images = resolver(allowed_image_hosts=("images.example.com",), allow_private_image_addresses=True)
    with pytest.raises(ImageSourceError, match=r"host '127\.0\.0\.1' is not in ALLOWED_IMAGE_HOSTS"):
        images.read(f"{file_host.url}/a.png", 1)
    assert file_host.seen == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_address_is_refused_even_for_an_allowed_host(file_host: FakeServer, host: str) -> None:
    file_host.routes["/a.png"] = Route(body=IMAGE)
    images = resolver(allowed_image_hosts=("*",))
    with pytest.raises(BlockedAddressError, match="ALLOW_PRIVATE_IMAGE_ADDRESSES"):
        images.read(f"http://{host}:{file_host.port}/a.png", 1)
    assert file_host.seen == []


def test_redirect_to_a_host_outside_the_list_is_refused(file_host: FakeServer) -> None:
    file_host.routes["/moved.png"] = Route(
        status=302, headers={"Location": f"http://localhost:{file_host.port}/a.png"}
    )
    images = resolver(allowed_image_hosts=("127.0.0.1",), allow_private_image_addresses=True)
    with pytest.raises(ImageSourceError, match="host 'localhost' is not in ALLOWED_IMAGE_HOSTS"):
        images.read(f"{file_host.url}/moved.png", 1)
    assert [seen.path for seen in file_host.seen] == ["/moved.png"]


def test_credentials_never_follow_a_redirect_away_from_label_studio(
    label_studio: FakeLabelStudio, file_host: FakeServer
) -> None:
    label_studio.routes["/data/upload/1/moved.png"] = Route(
        status=302, headers={"Location": f"{file_host.url}/a.png"}
    )
    file_host.routes["/a.png"] = Route(body=IMAGE)
    images = resolver(
        label_studio_url=label_studio.url,
        label_studio_api_key=LEGACY_TOKEN,
        allow_private_image_addresses=True,
    )
    assert images.read("/data/upload/1/moved.png", 1) == IMAGE
    assert "Authorization" not in file_host.seen[0].headers


@pytest.mark.parametrize("send_length", [True, False])
def test_byte_cap_aborts_the_download(file_host: FakeServer, send_length: bool) -> None:
    file_host.routes["/big.png"] = Route(body=b"\0" * 300_000, send_length=send_length)
    images = resolver(
        allowed_image_hosts=("127.0.0.1",), allow_private_image_addresses=True, max_image_bytes=100_000
    )
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_BYTES=100000"):
        images.read(f"{file_host.url}/big.png", 1)


@pytest.mark.parametrize(
    "reference",
    ["file:///etc/passwd", "ftp://example.com/a.png", "images/a.png", "data:image/png;base64,AAAA"],
)
def test_unsupported_references_are_refused(reference: str) -> None:
    with pytest.raises(ImageSourceError, match="not supported"):
        resolver(allowed_image_hosts=("*",)).read(reference, 1)


# --- pieces of the policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_jwt_claims_tell_tokens_apart() -> None:
    assert jwt_claims(PERSONAL_ACCESS_TOKEN)["token_type"] == "refresh"
    assert jwt_claims(LEGACY_TOKEN) is None
    assert jwt_claims("a.b.c") is None
