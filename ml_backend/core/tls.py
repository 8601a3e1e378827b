"""Which certificate authorities HTTPS connections trust (to Label Studio and to image hosts).

CA_BUNDLE names a PEM file (or an OpenSSL hashed folder) of the authorities to trust, e.g. a company's
private CA. Unset, the standard REQUESTS_CA_BUNDLE and then SSL_CERT_FILE are honoured: our HTTP
clients ignore the rest of the environment (``trust_env=False``: its proxies and ``.netrc`` would bypass
the address policy), so these are read here by name. None of them: certifi's public bundle.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import certifi

CA_VARIABLES = ("CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def ca_bundle_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """The first of CA_VARIABLES set (ValueError naming it when it is no readable bundle), or None."""
    environ = os.environ if environ is None else environ
    for name in CA_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            bundle = Path(value).expanduser()
            try:
                ssl_context(bundle)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"{name}={value!r}: not a readable PEM bundle or CA folder ({error})") from None
            return bundle
    return None


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A client context verifying certificates and host names against ``ca_bundle`` (None: certifi)."""
    if ca_bundle is None:
        return ssl.create_default_context(cafile=certifi.where())
    if ca_bundle.is_dir():
        return ssl.create_default_context(capath=str(ca_bundle))
    if not ca_bundle.is_file():
        raise FileNotFoundError(f"no such file or folder: {ca_bundle}")
    return ssl.create_default_context(cafile=str(ca_bundle))


def requests_verify(ca_bundle: Path | None) -> str | bool:
    """``requests``' ``verify`` for ``ca_bundle``: its path, or True (certifi)."""
    return str(ca_bundle) if ca_bundle is not None else True
