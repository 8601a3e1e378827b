"""HTTP downloads under a policy: one reading of every URL, checked addresses, manual redirects, caps.

- **One reading of a URL.** :func:`http_origin` decides where a URL points from what urllib3 (the
  client that connects) reads in it, and refuses any URL that another parser could read differently:
  backslashes, userinfo, control characters or whitespace, bad ports, malformed IPv6 literals,
  non-ASCII or percent-encoded hosts. So a URL that looks like Label Studio's to one parser never
  reaches another host with Label Studio's token.
- **Addresses.** The host is resolved and every address checked *before* connecting (a refused
  address gets the same answer whether or not its port is open), and the socket urllib3 has just
  connected is checked again before a byte is sent, so a DNS answer that changes in between (DNS
  rebinding) cannot slip through. Proxies from the environment are ignored: through a proxy the
  connected peer would be the proxy.
- **A deadline.** FETCH_TIMEOUT bounds the whole download (every hop, a retry after 401, headers and
  body): a watchdog shuts the sockets of a download down when its budget runs out, which also ends a
  read blocked on a body trickled byte by byte.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ml_backend.errors import BlockedAddressError, ImageFetchError, ImageSourceError, ImageTooLargeError

# Each hop's headers, given its URL and the URL that redirected to it (None for the first hop).
HopHeaders = Callable[[str, str | None], dict[str, str]]
PeerCheck = Callable[[str, int, str], None]

MAX_REDIRECTS = 5
_CHUNK_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# A host name as DNS spells it (letters, digits, hyphens, dots) or an IPv4 literal.
_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$")


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # lower case; an IPv6 literal without brackets
    port: int


class AmbiguousURLError(ImageSourceError):
    """A URL that two URL parsers could read as pointing at different hosts: never fetched."""


def http_origin(url: str) -> Origin:
    """The origin the HTTP client will connect to for ``url``; :class:`AmbiguousURLError` when unsure.

    Raises :class:`~ml_backend.errors.ImageSourceError` for anything but an absolute http(s) URL.
    """
    shown = display_url(url)[:200]
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise AmbiguousURLError(f"{shown!r}: URL contains a control character")
    if "\\" in url:
        raise AmbiguousURLError(f"{shown!r}: URL contains a backslash (parsers disagree on its host)")
    try:
        parts = urlsplit(url)
    except ValueError:  # urllib's own complaint is about unbalanced IPv6 brackets
        raise AmbiguousURLError(f"{shown!r}: malformed IPv6 address") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not url[len(parts.scheme) :].startswith("://"):
        raise ImageSourceError(f"{shown!r}: only absolute http:// and https:// URLs are downloaded")
    netloc = parts.netloc
    if "@" in netloc:
        raise AmbiguousURLError(f"{shown!r}: user names and passwords in URLs are not accepted")
    if " " in netloc or not netloc.isascii():
        raise AmbiguousURLError(f"{shown!r}: the host must be plain ASCII (use the xn-- form of a name)")
    host, port = _split_host_port(netloc, shown)
    scheme = parts.scheme.lower()
    origin = Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])
    # The cross-check: exactly what requests sends and urllib3 connects to must agree with our reading.
    try:
        prepared = requests.Request("GET", url).prepare().url or ""
        connected = parse_url(prepared)
    except (requests.RequestException, LocationParseError, ValueError) as error:
        raise AmbiguousURLError(f"{shown!r}: malformed URL ({error})") from None
    client_host = _normalized((connected.host or "").lower().strip("[]"))
    client_port = connected.port or DEFAULT_PORTS.get(connected.scheme or "", -1)
    if (connected.scheme, client_host, client_port) != (origin.scheme, origin.host, origin.port):
        raise AmbiguousURLError(f"{shown!r}: URL parsers disagree on its host")
    return origin


def _normalized(host: str) -> str:
    """An IP literal in its canonical spelling (``::ffff:127.0.0.1`` and ``::ffff:7f00:1`` are one host)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _split_host_port(netloc: str, shown: str) -> tuple[str, int | None]:
    host, port_text = netloc, None
    if netloc.startswith("["):
        closing = netloc.find("]")
        rest = netloc[closing + 1 :] if closing > 0 else ""
        if closing < 0 or (rest and not rest.startswith(":")):
            raise AmbiguousURLError(f"{shown!r}: malformed IPv6 address")
        literal, port_text = netloc[1:closing], rest[1:] if rest else None
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise AmbiguousURLError(f"{shown!r}: malformed IPv6 address {literal!r}") from None
        if "%" in literal:
            raise AmbiguousURLError(f"{shown!r}: IPv6 zone ids are not accepted")
    else:
        if "[" in netloc or "]" in netloc:
            raise AmbiguousURLError(f"{shown!r}: malformed IPv6 address")
        if ":" in netloc:
            host, port_text = netloc.rsplit(":", 1)
        host = host.lower()
        if not _HOST_NAME.match(host):
            raise AmbiguousURLError(f"{shown!r}: {host[:100]!r} is not a valid host name")
    if port_text is None or port_text == "":
        if port_text == "":
            raise AmbiguousURLError(f"{shown!r}: empty port")
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AmbiguousURLError(f"{shown!r}: port {port_text[:20]!r} is not a number between 1 and 65535")
    return host, int(port_text)


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


def checked_session(peer_check: PeerCheck) -> requests.Session:
    """A requests session whose every connection passes ``peer_check``; no environment proxies or netrc."""
    session = requests.Session()
    session.trust_env = False
    adapter = _PeerCheckedAdapter(peer_check)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def display_url(url: str) -> str:
    """The URL without query and fragment: presigned URLs carry signatures that must not reach logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path


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


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        return f"connection failed ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"
