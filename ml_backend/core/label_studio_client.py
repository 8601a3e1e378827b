"""How the command-line tools (``preannotate``, ``memory rebuild``) reach Label Studio's API.

- **Credentials that stay out of ``ps``.** ``--api-key`` is visible to every user of the machine in the
  process list; ``$LABEL_STUDIO_API_KEY`` and ``--api-key-file`` are not.
- **One wall-clock deadline per request.** httpx's timeouts bound each socket operation, so a server
  that trickles its answer a few bytes at a time holds a client forever. :func:`deadline_client` gives
  every request ``seconds`` from the first byte sent to the last byte read (connect, TLS, request,
  headers, body), as the backend's image downloads have (see ``ml_backend.images.fetch``).
- **No redirects.** A redirected POST comes back as a GET (302) or goes to another host (307): the
  answer is then not Label Studio's answer to what was asked. A 3xx is an error that names the URL.
"""

from __future__ import annotations

import argparse
import os
import ssl
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import httpcore
import httpx

from ml_backend.core.tls import ca_bundle_from_env, ssl_context

T = TypeVar("T")

API_KEY_VARIABLE = "LABEL_STUDIO_API_KEY"
# Label Studio's ids are database integers; the ledger and the label memory store them in SQLite's INTEGER.
MAX_ID = 2**63 - 1
# The deadline of the request being sent on this thread (sync httpx sends and reads on the caller's thread).
_deadline: ContextVar[float | None] = ContextVar("label_studio_request_deadline", default=None)
_WRITE_PIECE = 65536  # writes are cut in pieces so that each piece gets what is left of the deadline


def add_label_studio_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, and the key as ``--api-key-file`` or ``--api-key`` (default ``$LABEL_STUDIO_API_KEY``)."""
    parser.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio base URL (default: $LABEL_STUDIO_URL)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--api-key-file", type=Path, metavar="PATH",
                      help="read the legacy token or personal access token from this file (first line)")
    keys.add_argument("--api-key",
                      help=f"the token itself (default: ${API_KEY_VARIABLE}); other users of this machine see "
                           f"it in `ps`: prefer ${API_KEY_VARIABLE} or --api-key-file")


def id_argument(text: str) -> int:
    """argparse type of a Label Studio id (project, view, task): an integer from 1 to ``MAX_ID``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer id") from None
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: ids run from 1 to {MAX_ID}")
    return value


def api_key_from(args: argparse.Namespace) -> str | None:
    """The key the options give (file, then option, then environment); ``ValueError`` says why a file fails."""
    if args.api_key_file is not None:
        try:
            lines = args.api_key_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({error})") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file}: the first line is empty")
        return key
    return args.api_key or os.environ.get(API_KEY_VARIABLE) or None


def deadline_client(seconds: float, ca_bundle: Path | None = None) -> httpx.Client:
    """An httpx client (for ``label_studio_sdk.LabelStudio(httpx_client=...)``): each request ends within
    ``seconds`` (``httpx.TimeoutException`` otherwise), redirects are not followed, no environment proxy.
    HTTPS trusts ``ca_bundle``, else CA_BUNDLE / REQUESTS_CA_BUNDLE / SSL_CERT_FILE (``ml_backend.core.tls``)."""
    verify = ssl_context(ca_bundle if ca_bundle is not None else ca_bundle_from_env())
    return httpx.Client(transport=_DeadlineTransport(seconds, verify), timeout=seconds, follow_redirects=False)


class EndlessListingError(RuntimeError):
    """A page of a listing brought nothing not listed before: asking for more would never end."""


def unique_pages(fetch_page: Callable[[int], tuple[Sequence[T], int | None]], page_size: int,
                 key: Callable[[T], Hashable]) -> Iterator[T]:
    """The items of Label Studio's paged listing (``fetch_page(page)`` -> (items, total or None)), each once.

    Tasks added or deleted while paging shift the pages, so an item may come twice: it is yielded once.
    The walk ends at an empty page or at the page that reaches the total; a page that brings nothing new
    raises :class:`EndlessListingError` (a server answering page 1 to every page, without a total, would
    otherwise be asked forever).
    """
    seen: set[Hashable] = set()
    page = 1
    while True:
        items, total = fetch_page(page)
        new = 0
        for item in items:
            if key(item) not in seen:
                seen.add(key(item))
                new += 1
                yield item
        if not items or (total is not None and (len(seen) >= total or page * page_size >= total)):
            return
        if new == 0:
            raise EndlessListingError(
                f"page {page} held only items listed before ({len(seen)} so far, total "
                f"{total if total is not None else 'not given'}): the listing would never end"
            )
        page += 1


def short_body(body: object, limit: int = 300) -> str:
    """An error body on one line, cut: Label Studio's HTML error pages run to tens of kilobytes."""
    text = " ".join(str(body).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _DeadlineTransport(httpx.HTTPTransport):
    def __init__(self, seconds: float, verify: ssl.SSLContext) -> None:
        super().__init__(trust_env=False, verify=verify)
        self.seconds = seconds
        # httpx's transport has no hook for httpcore's network backend (httpcore's pool takes one): the
        # one private attribute touched here; tests/preannotate's trickling server fails if it moves.
        self._pool._network_backend = _DeadlineBackend(self._pool._network_backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Set for this request; the body is read on this thread right after, still under it.
        _deadline.set(time.monotonic() + self.seconds)
        return super().handle_request(request)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to what is left of the request's deadline; ``error`` once it has passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("no complete answer within the request's deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_PIECE):
            self._stream.write(buffer[start:start + _WRITE_PIECE], _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        )

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)
