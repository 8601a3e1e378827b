"""One reading of a URL: where the HTTP client will really connect, refusing URLs parsers could read twice.

:func:`http_origin` decides where a URL points from what urllib3 (the client that connects) reads in it,
and refuses any URL that another parser could read differently: backslashes, userinfo, control characters
or whitespace, bad ports, malformed IPv6 literals, non-ASCII or percent-encoded hosts. So a URL that looks
like Label Studio's to one parser never reaches another host with Label Studio's token. Settings use it to
check LABEL_STUDIO_URL; the downloader (``ml_backend.images``) to vet every hop.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ml_backend.core.errors import ImageSourceError

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

    Raises :class:`~ml_backend.core.errors.ImageSourceError` for anything but an absolute http(s) URL.
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


def display_url(url: str) -> str:
    """The URL without query and fragment: presigned URLs carry signatures that must not reach logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path
