"""HTTP downloads under a policy: one reading of every URL, checked addresses, manual redirects, caps.

- **One reading of a URL.** :func:`ml_backend.core.urls.http_origin` decides where each hop points, from
  what urllib3 (the client that connects) reads in it; URLs that parsers could read twice are refused.
- **Addresses.** The host is resolved and every address checked *before* connecting (a refused
  address gets the same answer whether or not its port is open), and the socket urllib3 has just
  connected is checked again before a byte is sent, so a DNS answer that changes in between (DNS
  rebinding) cannot slip through. Proxies from the environment are ignored: through a proxy the
  connected peer would be the proxy.
- **Trusted authorities.** HTTPS verifies certificates against CA_BUNDLE (``ml_backend.core.tls``); a
  certificate no trusted authority signed is an :class:`UntrustedCertificateError` that says so.
- **A deadline.** FETCH_TIMEOUT bounds the whole download (every hop, a retry after 401, headers and
  body): a watchdog shuts the sockets of a download down when its budget runs out, which also ends a
  read blocked on a body trickled byte by byte.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ml_backend.core.errors import BlockedAddressError, ImageFetchError, ImageTooLargeError, UntrustedCertificateError
from ml_backend.core.tls import requests_verify
from ml_backend.core.urls import display_url

# Each hop's headers, given its URL and the URL that redirected to it (None for the first hop).
HopHeaders = Callable[[str, str | None], dict[str, str]]
PeerCheck = Callable[[str, int, str], None]

MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses (not private, loopback, link-local, multicast...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def address_check(*, allow_private: bool, exempt: Collection[tuple[str, int]]) -> PeerCheck:
    """A check refusing non-public addresses, except for the ``(host, port)`` pairs in ``exempt``."""
    exempt = {(host.lower(), port) for host, port in exempt}

    def check(host: str, port: int, address: str) -> None:
        if allow_private or (host.lower(), port) in exempt or is_public_address(address):
            return
        raise BlockedAddressError(
            f"refusing to download from {host}: it resolves to the non-public address {address} "
            "(set ALLOW_PRIVATE_IMAGE_ADDRESSES=true to allow private networks)"
        )

    return check


class _Budget:
    """The deadline of one download, shared by its hops; expiry shuts the watched sockets down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # shutdown (unlike close) wakes a thread blocked in recv on this socket.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# The budget of the download running on this thread (urllib3 connects and reads on the caller's thread).
_current = threading.local()


def _current_budget() -> _Budget | None:
    return getattr(_current, "budget", None)


class _PeerCheckedConnection:
    """Mixin for urllib3 connections: vet the addresses before connecting and the peer after."""

    peer_check: PeerCheck

    def _new_conn(self) -> socket.socket:
        host, port = self.host, self.port  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise ImageFetchError(f"cannot resolve host {host!r} ({error.strerror or error})") from None
        for info in infos:
            self.peer_check(host, port, info[4][0])
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            self.peer_check(host, port, sock.getpeername()[0])
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, *args: object, **kwargs: object) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]
        budget = _current_budget()
        if budget is not None:
            budget.watch(self.sock)  # type: ignore[attr-defined]


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


def checked_session(peer_check: PeerCheck, ca_bundle: Path | None = None) -> requests.Session:
    """A requests session whose every connection passes ``peer_check``; no environment proxies or netrc;
    HTTPS trusts ``ca_bundle`` (None: certifi's public authorities)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = requests_verify(ca_bundle)
    adapter = _PeerCheckedAdapter(peer_check)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Downloader:
    """GET a URL into memory: redirects followed by hand (each hop re-vetted), size and time capped."""

    def __init__(self, session: requests.Session, *, max_bytes: int, timeout: float) -> None:
        self.session = session
        self.max_bytes = max_bytes
        self.timeout = timeout

    @contextmanager
    def deadline(self) -> Iterator[None]:
        """Run the ``with`` block's downloads under one FETCH_TIMEOUT budget (nested blocks share it)."""
        if _current_budget() is not None:
            yield
            return
        budget = _current.budget = _Budget(self.timeout)
        budget.timer.start()
        try:
            yield
        finally:
            budget.timer.cancel()
            _current.budget = None

    def get(self, url: str, hop_headers: HopHeaders) -> bytes:
        """Bytes at ``url``; ``hop_headers`` vets each hop (raising to refuse it) and gives its headers."""
        with self.deadline():
            previous = None
            for _ in range(MAX_REDIRECTS + 1):
                headers = hop_headers(url, previous)
                response = self._send("GET", url, headers=headers, stream=True)
                with response:
                    if response.is_redirect:
                        previous, url = url, urljoin(url, response.headers["Location"])
                        continue
                    if response.status_code != 200:
                        raise ImageFetchError(
                            f"{display_url(url)}: HTTP {response.status_code} {response.reason}",
                            status=response.status_code,
                        )
                    if "X-Accel-Redirect" in response.headers:
                        # Label Studio (USE_NGINX_FOR_UPLOADS, its default) hands cloud-backed uploads to
                        # its nginx with this header and an empty body: reached past the nginx, no image.
                        raise ImageFetchError(
                            f"{display_url(url)}: Label Studio answered with X-Accel-Redirect, meant for its "
                            "nginx: point LABEL_STUDIO_URL at the nginx in front of Label Studio (its Docker "
                            "image serves through one), or set USE_NGINX_FOR_UPLOADS=false in Label Studio"
                        )
                    return self._read(response, url)
            raise ImageFetchError(f"{display_url(url)}: more than {MAX_REDIRECTS} redirects")

    def post_json(self, url: str, payload: dict) -> requests.Response:
        """A small JSON POST (token exchange) under the same address policy and deadline."""
        with self.deadline():
            return self._send("POST", url, json=payload)

    def _send(self, method: str, url: str, **kwargs: object) -> requests.Response:
        remaining = self._remaining(url)
        try:
            return self.session.request(
                method, url, allow_redirects=False, timeout=(remaining, remaining), **kwargs
            )
        except requests.exceptions.SSLError as error:
            self._remaining(url)
            raise UntrustedCertificateError(
                f"{display_url(url)}: TLS verification failed ({_ssl_reason(error)}); if the server uses a "
                "private certificate authority, set CA_BUNDLE to its PEM bundle"
            ) from error
        except requests.RequestException as error:
            if isinstance(error, requests.Timeout):  # the timeouts given are what was left of the budget
                raise ImageFetchError(
                    f"{display_url(url)}: download exceeded FETCH_TIMEOUT={self.timeout} s"
                ) from error
            self._remaining(url)
            raise ImageFetchError(f"{display_url(url)}: {_describe(error)}") from error

    def _remaining(self, url: str) -> float:
        """Seconds left of this download's budget; the FETCH_TIMEOUT error once it is spent."""
        budget = _current_budget()
        remaining = budget.remaining() if budget is not None else self.timeout
        if remaining <= 0 or (budget is not None and budget.expired):
            raise ImageFetchError(f"{display_url(url)}: download exceeded FETCH_TIMEOUT={self.timeout} s")
        return remaining

    def _read(self, response: requests.Response, url: str) -> bytes:
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
                chunks.append(chunk)
        except requests.RequestException as error:
            self._remaining(url)
            raise ImageFetchError(f"{display_url(url)}: {_describe(error)}") from error
        # A body ended by the watchdog's shutdown can look complete when it had no Content-Length.
        self._remaining(url)
        return b"".join(chunks)


def _ssl_reason(error: requests.exceptions.SSLError) -> str:
    """OpenSSL's reason (e.g. "certificate verify failed: unable to get local issuer certificate"),
    found down the chain requests and urllib3 wrap it in."""
    cause: object = error
    for _ in range(8):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return cause.reason or str(cause)
        if not isinstance(cause, BaseException):
            break
        wrapped = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = cause.__cause__ or getattr(cause, "reason", None) or wrapped or cause.__context__
    return str(error)[:200]


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return f"connection failed ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"
