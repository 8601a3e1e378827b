"""The Authorization header for requests to Label Studio.

A legacy API token is sent as ``Token <key>``. A personal access token is a JWT *refresh* token: it is
exchanged at ``POST /api/token/refresh/`` for a short-lived access token sent as ``Bearer <access>``,
renewed shortly before it expires or when Label Studio answers 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time

from ml_backend.core.errors import ImageFetchError
from ml_backend.images.fetch import Downloader

REFRESH_PATH = "/api/token/refresh/"
# Renew this long before the access token's own expiry, so a download never starts with a dying token.
_EXPIRY_MARGIN_S = 30.0
# Assumed lifetime of an access token that carries no "exp" claim.
_DEFAULT_LIFETIME_S = 300.0


class LabelStudioCredentials:
    """Thread-safe source of the Authorization header for Label Studio at ``base_url``."""

    def __init__(self, api_key: str | None, base_url: str | None, downloader: Downloader) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._downloader = downloader
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0

    @property
    def is_personal_access_token(self) -> bool:
        return self._api_key is not None and jwt_claims(self._api_key) is not None

    def authorization(self) -> str | None:
        """``Token <key>``, ``Bearer <access>`` (exchanging the refresh token when due), or None."""
        if self._api_key is None:
            return None
        if not self.is_personal_access_token:
            return f"Token {self._api_key}"
        with self._lock:
            if self._access is None or time.time() >= self._access_expires - _EXPIRY_MARGIN_S:
                self._access, self._access_expires = self._exchange()
            return f"Bearer {self._access}"

    def invalidate(self) -> bool:
        """Forget the access token after a 401; True when a fresh exchange may help."""
        with self._lock:
            self._access = None
        return self.is_personal_access_token

    def _exchange(self) -> tuple[str, float]:
        if self._base_url is None:
            raise ImageFetchError(
                "LABEL_STUDIO_API_KEY is a personal access token but LABEL_STUDIO_URL is not set"
            )
        url = self._base_url + REFRESH_PATH
        response = self._downloader.post_json(url, {"refresh": self._api_key})
        with response:
            try:
                access = response.json().get("access") if response.status_code == 200 else None
            except ValueError:
                access = None
        if not isinstance(access, str) or not access:
            raise ImageFetchError(
                f"Label Studio refused the personal access token in LABEL_STUDIO_API_KEY at {url} "
                f"(HTTP {response.status_code}); create a new token in Label Studio's Account & Settings",
                status=response.status_code,
            )
        expiry = (jwt_claims(access) or {}).get("exp")
        lifetime_end = float(expiry) if isinstance(expiry, int | float) else time.time() + _DEFAULT_LIFETIME_S
        return access, lifetime_end


def jwt_claims(token: str) -> dict | None:
    """The (unverified) claims of a well-formed JWT, or None when ``token`` is not one.

    Only the shape is read: Label Studio verifies the signature; we merely need to know which header
    to send and when the access token expires.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(_b64url(part)) for part in parts[:2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    return claims


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
