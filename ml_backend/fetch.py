"""HTTP downloads under a policy: checked peer addresses, manual redirects, byte cap and deadline.

The address check runs on the socket urllib3 has just connected, before a byte is sent, so a DNS
answer that changes between a check and the connection (DNS rebinding) cannot slip through. Proxies
from the environment are ignored: through a proxy the connected peer would be the proxy.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Collection
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ml_backend.errors import BlockedAddressError, ImageFetchError, ImageTooLargeError

# Each hop's headers, given its URL and the URL that redirected to it (None for the first hop).
HopHeaders = Callable[[str, str | None], dict[str, str]]
PeerCheck = Callable[[str, int, str], None]

MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses (not private, loopback, link-local, multicast...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def address_check(*, allow_private: bool, exempt: Collection[tuple[str, int]]) -> PeerCheck:
    """A peer check refusing non-public addresses, except for the ``(host, port)`` pairs in ``exempt``."""
    exempt = {(host.lower(), port) for host, port in exempt}

    def check(host: str, port: int, peer: str) -> None:
        if allow_private or (host.lower(), port) in exempt or is_public_address(peer):
            return
        raise BlockedAddressError(
            f"refusing to download from {host}: it resolves to the non-public address {peer} "
            "(set ALLOW_PRIVATE_IMAGE_ADDRESSES=true to allow private networks)"
        )

    return check


class _PeerCheckedConnection:
    """Mixin for urllib3 connections: vet the connected peer before anything is sent."""

    peer_check: PeerCheck

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            self.peer_check(self.host, self.port, sock.getpeername()[0])  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise
        return sock


def _checked_pool(
    pool: type[HTTPConnectionPool], connection: type[HTTPConnection], peer_check: PeerCheck
) -> type[HTTPConnectionPool]:
    """A subclass of ``pool`` whose connections run ``peer_check`` (urllib3's ``ConnectionCls`` hook)."""
    checked_connection = type(
        f"Checked{connection.__name__}",
        (_PeerCheckedConnection, connection),
        {"peer_check": staticmethod(peer_check)},
    )
    return type(f"Checked{pool.__name__}", (pool,), {"ConnectionCls": checked_connection})


class _PeerCheckedAdapter(HTTPAdapter):
    def __init__(self, peer_check: PeerCheck) -> None:
        self._pool_classes = {
            "http": _checked_pool(HTTPConnectionPool, HTTPConnection, peer_check),
            "https": _checked_pool(HTTPSConnectionPool, HTTPSConnection, peer_check),
        }
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


def checked_session(peer_check: PeerCheck) -> requests.Session:
    """A requests session whose every connection passes ``peer_check``; no environment proxies."""
    session = requests.Session()
    session.trust_env = False
    adapter = _PeerCheckedAdapter(peer_check)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def display_url(url: str) -> str:
    """The URL without query and fragment: presigned URLs carry signatures that must not reach logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class Downloader:
    """GET a URL into memory: redirects followed by hand (each hop re-vetted), size and time capped."""

    def __init__(self, session: requests.Session, *, max_bytes: int, timeout: float) -> None:
        self.session = session
        self.max_bytes = max_bytes
        self.timeout = timeout

    def get(self, url: str, hop_headers: HopHeaders) -> bytes:
        """Bytes at ``url``; ``hop_headers`` vets each hop (raising to refuse it) and gives its headers."""
        deadline = time.monotonic() + self.timeout
        previous = None
        for _ in range(MAX_REDIRECTS + 1):
            headers = hop_headers(url, previous)
            response = self._send(url, headers)
            with response:
                if response.is_redirect:
                    previous, url = url, urljoin(url, response.headers["Location"])
                    continue
                if response.status_code != 200:
                    raise ImageFetchError(
                        f"{display_url(url)}: HTTP {response.status_code} {response.reason}",
                        status=response.status_code,
                    )
                return self._read(response, url, deadline)
        raise ImageFetchError(f"{display_url(url)}: more than {MAX_REDIRECTS} redirects")

    def post_json(self, url: str, payload: dict) -> requests.Response:
        """A small JSON POST (token exchange) under the same address policy and timeout."""
        try:
            return self.session.post(url, json=payload, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as error:
            raise ImageFetchError(f"{display_url(url)}: {_describe(error)}") from error

    def _send(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.get(
                url, headers=headers, stream=True, allow_redirects=False, timeout=(self.timeout, self.timeout)
            )
        except requests.RequestException as error:
            raise ImageFetchError(f"{display_url(url)}: {_describe(error)}") from error

    def _read(self, response: requests.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageTooLargeError(
                f"{display_url(url)}: {declared} bytes exceeds MAX_IMAGE_BYTES={self.max_bytes}"
            )
        chunks, total = [], 0
        try:
            # iter_content undoes Content-Encoding, so the cap also bounds a compressed bomb.
            for chunk in response.iter_content(_CHUNK_BYTES):
                total += len(chunk)
                if total > self.max_bytes:
                    raise ImageTooLargeError(
                        f"{display_url(url)}: more than MAX_IMAGE_BYTES={self.max_bytes} bytes"
                    )
                if time.monotonic() > deadline:
                    raise ImageFetchError(
                        f"{display_url(url)}: download exceeded FETCH_TIMEOUT={self.timeout} s"
                    )
                chunks.append(chunk)
        except requests.RequestException as error:
            raise ImageFetchError(f"{display_url(url)}: {_describe(error)}") from error
        return b"".join(chunks)


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return f"connection failed ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"
