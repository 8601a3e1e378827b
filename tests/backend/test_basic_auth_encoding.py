"""Basic auth with non-ASCII credentials (issue 19, item 16): Label Studio sends them in Latin-1 (requests'
rule), browsers and curl in UTF-8; both must authenticate, and a password Label Studio cannot send at all
(beyond Latin-1) is refused when the service starts, with the reason."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
import requests.auth

from ml_backend.core.settings import Settings, SettingsError

USER, PASSWORD = "zoë", "pässwörd"


def header(user: bytes, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_non_ascii_credentials_authenticate_in_latin1_and_utf8(make_client: Callable, encoding: str) -> None:
    client = make_client(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    good = header(USER.encode(encoding), PASSWORD.encode(encoding))
    assert client.post("/setup", json={}, headers=good).status_code == 200
    wrong = header(USER.encode(encoding), "passwörd".encode(encoding))
    assert client.post("/setup", json={}, headers=wrong).status_code == 401


def test_label_studios_own_header_authenticates(make_client: Callable) -> None:
    """The header exactly as Label Studio's HTTP client (requests) builds it."""
    client = make_client(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    built = requests.auth._basic_auth_str(USER, PASSWORD)
    assert client.post("/setup", json={}, headers={"Authorization": built}).status_code == 200


@pytest.mark.parametrize("value", ["", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                                   "Bearer " + base64.b64encode(b"a:b").decode()])
def test_malformed_authorization_headers_are_401(make_client: Callable, value: str) -> None:
    client = make_client(basic_auth_user=USER, basic_auth_pass=PASSWORD)
    assert client.post("/setup", json={}, headers={"Authorization": value}).status_code == 401


def test_a_password_label_studio_cannot_send_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="BASIC_AUTH_PASS has characters beyond Latin-1"):
        Settings.from_env({"BASIC_AUTH_USER": "admin", "BASIC_AUTH_PASS": "пароль"})
