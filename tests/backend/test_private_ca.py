"""Private certificate authorities: CA_BUNDLE (or REQUESTS_CA_BUNDLE / SSL_CERT_FILE) is trusted for HTTPS
to Label Studio and image hosts; a certificate no trusted authority signed fails with a named error.

The authorities and the server certificate are made in the test with the ``openssl`` command.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ml_backend.core.errors import UntrustedCertificateError
from ml_backend.core.settings import Settings, SettingsError
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import LEGACY_TOKEN, FakeLabelStudio, FakeServer, Route
from tests.backend.support import png_bytes

IMAGE = png_bytes(5)


@dataclass(frozen=True)
class Pki:
    ca: Path  # the authority that signed the server's certificate
    other_ca: Path  # an authority that did not
    certificate: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _authority(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _authority(folder, "test-ca")
    _authority(folder, "other-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=folder)
    return Pki(folder / "test-ca.pem", folder / "other-ca.pem", folder / "server.pem", folder / "server.key")


def _serve_https(server: FakeServer, pki: Pki) -> FakeServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certificate, pki.key)
    # Handshakes happen in the handler threads, so a refused handshake never stalls the server.
    server._server.socket = context.wrap_socket(
        server._server.socket, server_side=True, do_handshake_on_connect=False
    )
    return server.start()


@pytest.fixture
def https_host(pki: Pki) -> Iterator[FakeServer]:
    server = _serve_https(FakeServer(), pki)
    server.routes["/a.png"] = Route(body=IMAGE)
    yield server
    server.stop()


@pytest.fixture
def https_label_studio(pki: Pki) -> Iterator[FakeLabelStudio]:
    server = _serve_https(FakeLabelStudio(), pki)
    server.uploads["1/scene.png"] = IMAGE
    server.required_authorization = f"Token {LEGACY_TOKEN}"
    yield server
    server.stop()


def _https(server: FakeServer) -> str:
    return server.url.replace("http://", "https://")


def _resolver(**overrides: object) -> ImageResolver:
    return ImageResolver(Settings(fetch_timeout=10.0, allow_private_image_addresses=True, **overrides))


def test_ca_bundle_trusts_a_private_authority_for_image_hosts(https_host: FakeServer, pki: Pki) -> None:
    assert _resolver(ca_bundle=pki.ca).read(f"{_https(https_host)}/a.png") == IMAGE


def test_ca_bundle_trusts_a_private_authority_for_label_studio(
    https_label_studio: FakeLabelStudio, pki: Pki
) -> None:
    images = _resolver(ca_bundle=pki.ca, label_studio_url=_https(https_label_studio),
                       label_studio_api_key=LEGACY_TOKEN)
    assert images.read("/data/upload/1/scene.png") == IMAGE
    assert https_label_studio.requests_to("/data/upload/")[0].headers["Authorization"] == f"Token {LEGACY_TOKEN}"


@pytest.mark.parametrize("trusted", ["none", "other"])
def test_an_untrusted_certificate_is_a_named_error(https_host: FakeServer, pki: Pki, trusted: str) -> None:
    images = _resolver(ca_bundle=None if trusted == "none" else pki.other_ca)
    with pytest.raises(UntrustedCertificateError, match=r"certificate verify failed.*set CA_BUNDLE") as caught:
        images.read(f"{_https(https_host)}/a.png")
    assert caught.value.reason == "tls_certificate"


def test_the_error_reaches_the_task_entry(
    https_host: FakeServer, pki: Pki, make_client, tmp_path: Path
) -> None:
    from tests.backend.support import predict, task

    client = make_client(allow_private_image_addresses=True, cache_dir=tmp_path / "cache", ca_bundle=pki.other_ca)
    [entry] = predict(client, [task(1, f"{_https(https_host)}/a.png")])
    assert "result" not in entry and entry["error"].startswith("tls_certificate: ")


@pytest.mark.parametrize("variable", ["CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_standard_variables_are_honoured(pki: Pki, variable: str) -> None:
    assert Settings.from_env({variable: str(pki.ca)}).ca_bundle == pki.ca


def test_ca_bundle_comes_before_the_standard_variables(pki: Pki) -> None:
    environ = {"CA_BUNDLE": str(pki.ca), "REQUESTS_CA_BUNDLE": str(pki.other_ca)}
    assert Settings.from_env(environ).ca_bundle == pki.ca


def test_a_missing_or_unreadable_bundle_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CA_BUNDLE=.*not a readable PEM bundle"):
        Settings.from_env({"CA_BUNDLE": str(tmp_path / "absent.pem")})
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(SettingsError, match=r"SSL_CERT_FILE=.*not a readable PEM bundle"):
        Settings.from_env({"SSL_CERT_FILE": str(tmp_path / "garbage.pem")})


def test_the_label_studio_api_client_trusts_the_same_bundle(
    https_host: FakeServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from ml_backend.core.label_studio_client import deadline_client

    url = f"{_https(https_host)}/a.png"
    assert deadline_client(10.0, pki.ca).get(url).content == IMAGE
    # The command-line tools read the standard variables, as the backend does.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    assert deadline_client(10.0).get(url).content == IMAGE
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        deadline_client(10.0).get(url)
