"""The Authorization header for requests to Label Studio, with label-studio-sdk's token handling.

A legacy API token is sent as ``Token <key>``. A personal access token is a JWT *refresh* token: it is
exchanged at ``POST /api/token/refresh/`` for a short-lived access token sent as ``Bearer <access>``.

The SDK does the token work: :class:`label_studio_sdk.tokens.client_ext.TokensClientExt` tells the kinds
apart (PyJWT, unverified), refuses an expired personal access token, and makes the exchange (over our
:func:`~ml_backend.core.label_studio_client.deadline_client`: one deadline, no redirects, CA_BUNDLE).
What stays ours, and why:

- **Renewal before expiry and after a 401.** The SDK renews only once its access token has expired, and
  never when Label Studio refuses it (revoked, clock skew); an image download that starts with a token
  about to expire fails. We renew ``_EXPIRY_MARGIN_S`` early and after a 401 (``invalidate``).
- **Errors that say what to do**, as task errors (``ImageFetchError``), never a start-up crash: the SDK
  raises ``ApiError`` with Label Studio's body.
- **The header for image downloads.** The SDK builds headers for its own API calls; our downloads go
  through the address-checked session of ``ml_backend.images.fetch``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import jwt
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.client_wrapper import SyncClientWrapper
from label_studio_sdk.tokens.client_ext import TokensClientExt

from ml_backend.core.errors import ImageFetchError
from ml_backend.core.label_studio_client import deadline_client

REFRESH_PATH = "/api/token/refresh/"
# Renew this long before the access token's own expiry, so a download never starts with a dying token.
_EXPIRY_MARGIN_S = 30.0
# Assumed lifetime of an access token that carries no "exp" claim.
_DEFAULT_LIFETIME_S = 300.0


class LabelStudioCredentials:
    """Thread-safe source of the Authorization header for Label Studio at ``base_url``."""

    def __init__(
        self, api_key: str | None, base_url: str | None, *, timeout: float, ca_bundle: Path | None = None
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._lock = threading.Lock()
        self._access: str | None = None
        self._access_expires = 0.0
        self._tokens: TokensClientExt | None = None
        self._refused: str | None = None  # why the SDK refused the key outright (expired, no expiry)
        if api_key is not None and base_url is not None and self.is_personal_access_token:
            # A trailing slash keeps a sub-path (LABEL_STUDIO_URL=https://host/label-studio) in the SDK's urljoin.
            try:
                wrapper = SyncClientWrapper(  # builds its own TokensClientExt: refuses an expired key here
                    api_key=api_key, base_url=base_url + "/", timeout=timeout,
                    httpx_client=deadline_client(timeout, ca_bundle),
                )
                self._tokens = TokensClientExt(base_url=base_url + "/", api_key=api_key, client_wrapper=wrapper)
            except ApiError as error:
                self._refused = _detail(error)

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
        advice = "create a new token in Label Studio's Account & Settings"
        if self._refused is not None:
            raise ImageFetchError(f"the personal access token in LABEL_STUDIO_API_KEY is unusable ({self._refused}); "
                                  f"{advice}", status=401)
        try:
            access = self._tokens.refresh().access
        except ApiError as error:
            raise ImageFetchError(
                f"Label Studio refused the personal access token in LABEL_STUDIO_API_KEY at {url} "
                f"(HTTP {error.status_code}); {advice}",
                status=error.status_code,
            ) from error
        except (httpx.HTTPError, ValueError) as error:  # unreachable, timed out, TLS; an answer not JSON
            raise ImageFetchError(f"{url}: token exchange failed ({type(error).__name__}: {error})") from error
        if not isinstance(access, str) or not access:
            raise ImageFetchError(f"Label Studio answered the token exchange at {url} without an access token")
        expiry = (jwt_claims(access) or {}).get("exp")
        lifetime_end = float(expiry) if isinstance(expiry, int | float) else time.time() + _DEFAULT_LIFETIME_S
        return access, lifetime_end


def jwt_claims(token: str) -> dict | None:
    """The (unverified) claims of a well-formed JWT, or None when ``token`` is not one.

    Only the shape is read: Label Studio verifies the signature; we merely need to know which header
    to send and when the access token expires.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims if isinstance(claims, dict) else None


def _detail(error: ApiError) -> str:
    body = error.body
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
