"""Turn the image reference in a task into the image file's bytes, under the download policy.

Sources, by the shape of the reference:

- ``/data/local-files/?d=<path>`` — read from LOCAL_FILES_DOCUMENT_ROOT when it is set (the path must
  stay inside the root, symlinks included), else downloaded from Label Studio like an upload;
- other relative URLs (``/data/upload/...``, ``/storage-data/...``) and absolute URLs on Label
  Studio's origin — downloaded from LABEL_STUDIO_URL with its credentials;
- ``<HOSTNAME>/storage-data/uploaded/?filepath=upload/...`` — uploads on cloud-backed storage, which Label
  Studio writes with its public HOSTNAME (often not the address the backend reaches it at): read from
  LABEL_STUDIO_URL at the same path, as label-studio-sdk does; the host named in the URL is never
  contacted, so the credentials still go to LABEL_STUDIO_URL only;
- ``s3://``, ``gs://``, ``azure-blob://``, ``azure-spi://`` — presigned by Label Studio
  (``GET /tasks/<task id>/presign/?fileuri=<base64url of the URI>``), which redirects to the storage;
- other ``http(s)://`` URLs — any host (or only those in ALLOWED_IMAGE_HOSTS when it is set), never
  with credentials: Label Studio's own policy.

Every hop of every download (redirects included) is re-vetted; credentials go only to Label Studio's
origin, as read by :func:`~ml_backend.core.urls.http_origin` (the reading of the client that connects);
connections to non-public addresses are refused unless ALLOW_PRIVATE_IMAGE_ADDRESSES is set (Label
Studio's own host and port are always allowed: the operator configured them). FETCH_TIMEOUT bounds the
whole read of one image, token exchange and retries included.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from ml_backend.core.errors import ImageFetchError, ImageSourceError, ImageTooLargeError
from ml_backend.core.settings import Settings
from ml_backend.core.urls import DEFAULT_PORTS, Origin, display_url, http_origin
from ml_backend.images.credentials import LabelStudioCredentials
from ml_backend.images.fetch import Downloader, address_check, checked_session

CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")
LOCAL_FILES_PATH = "/data/local-files"
# Label Studio's proxy for uploads on its default (cloud) storage: core/storage.py StorageProxyMixin.
STORAGE_DATA_PATH = "/storage-data/uploaded/"


class ImageResolver:
    """Reads the bytes of a task's image; one instance per process (it holds the credentials)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._label_studio: Origin | None = (
            http_origin(settings.label_studio_url) if settings.label_studio_url else None
        )
        exempt = [(self._label_studio.host, self._label_studio.port)] if self._label_studio else []
        session = checked_session(
            address_check(allow_private=settings.allow_private_image_addresses, exempt=exempt),
            settings.ca_bundle,
        )
        self.downloader = Downloader(
            session, max_bytes=settings.max_image_bytes, timeout=settings.fetch_timeout
        )
        self.credentials = LabelStudioCredentials(
            settings.label_studio_api_key, settings.label_studio_url,
            timeout=settings.fetch_timeout, ca_bundle=settings.ca_bundle,
        )

    def read(self, reference: str, task_id: object = None) -> bytes:
        """The image file's bytes; a :class:`~ml_backend.core.errors.TaskError` subclass says why not."""
        reference = reference.strip()
        try:
            scheme = urlsplit(reference).scheme.lower()
        except ValueError as error:  # e.g. an unbalanced IPv6 bracket
            raise ImageSourceError(f"image reference {reference[:200]!r}: malformed IPv6 address ({error})") from None
        with self.downloader.deadline():
            if scheme in CLOUD_SCHEMES:
                return self._download(self._presign_url(reference, task_id))
            if reference.startswith("/") and not reference.startswith("//"):
                return self._read_label_studio(reference)
            if scheme in DEFAULT_PORTS:
                if http_origin(reference) == self._label_studio:
                    relative = urlsplit(reference)._replace(scheme="", netloc="").geturl()
                    return self._read_label_studio(relative, absolute=reference)
                if _is_storage_data_upload(reference):
                    relative = urlsplit(reference)._replace(scheme="", netloc="").geturl()
                    return self._download(self._label_studio_url(relative))
                return self._download(reference)
        raise ImageSourceError(
            f"image reference {reference[:200]!r} is not supported: use an http(s) URL, a Label Studio URL "
            "(/data/upload/..., /data/local-files/?d=...) or a cloud URI "
            f"({', '.join(scheme + '://' for scheme in CLOUD_SCHEMES)})"
        )

    def _read_label_studio(self, relative: str, absolute: str | None = None) -> bytes:
        root = self.settings.local_files_document_root
        if root is not None and urlsplit(relative).path.rstrip("/") == LOCAL_FILES_PATH:
            return self._read_local_file(relative, root)
        return self._download(absolute or self._label_studio_url(relative))

    def _label_studio_url(self, path: str) -> str:
        if self.settings.label_studio_url is None:
            raise ImageSourceError(
                f"image {path[:200]!r} is served by Label Studio, but LABEL_STUDIO_URL is not set"
            )
        return self.settings.label_studio_url + path

    def _presign_url(self, uri: str, task_id: object) -> str:
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise ImageSourceError(f"cloud image {uri[:200]!r} needs the task's integer id to be presigned")
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        return self._label_studio_url(f"/tasks/{task_id}/presign/?fileuri={quote(encoded)}")

    def _download(self, url: str) -> bytes:
        try:
            return self.downloader.get(url, self._hop_headers)
        except ImageFetchError as error:
            # An access token can expire or be revoked between our check and Label Studio's.
            if error.status == 401 and self.credentials.invalidate():
                return self.downloader.get(url, self._hop_headers)
            raise

    def _hop_headers(self, url: str, previous: str | None) -> dict[str, str]:
        """Vet one hop: Label Studio gets credentials; others must be allowed and get none."""
        hop = http_origin(url)
        if hop == self._label_studio:
            authorization = self.credentials.authorization()
            return {"Authorization": authorization} if authorization else {}
        # Label Studio's presign endpoint redirects to the storage it is configured with: that hop
        # is vouched for by Label Studio, though still subject to the address check.
        vouched = previous is not None and http_origin(previous) == self._label_studio
        allowed = self.settings.allowed_image_hosts
        if allowed and not vouched and not self._host_allowed(hop.host):
            raise ImageSourceError(
                f"{display_url(url)[:200]}: host {hop.host!r} is not in ALLOWED_IMAGE_HOSTS ({', '.join(allowed)})"
            )
        return {}

    def _host_allowed(self, host: str) -> bool:
        for pattern in self.settings.allowed_image_hosts:
            if pattern == "*" or host == pattern:
                return True
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False

    def _read_local_file(self, relative_url: str, root: Path) -> bytes:
        values = parse_qs(urlsplit(relative_url).query, keep_blank_values=True).get("d") or [""]
        # Label Studio reads the last d= value, relative to its root even with a leading slash.
        requested = values[-1].lstrip("/")
        if "\x00" in requested:
            raise ImageSourceError(f"local-files path {requested[:200]!r} contains a NUL byte")
        if not requested:
            raise ImageSourceError(f"local-files URL {relative_url[:200]!r} has no ?d= path")
        path = Path(os.path.realpath(root / requested))
        if not path.is_relative_to(root):
            raise ImageSourceError(f"local-files path {requested[:200]!r} escapes LOCAL_FILES_DOCUMENT_ROOT")
        limit = self.settings.max_image_bytes
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ImageFetchError(f"local file {requested[:200]!r} is not a regular file")
            if size > limit:
                raise ImageTooLargeError(
                    f"local file {requested[:200]!r}: {size} bytes exceeds MAX_IMAGE_BYTES={limit}"
                )
            return path.read_bytes()
        except OSError as error:
            raise ImageFetchError(
                f"local file {requested[:200]!r} cannot be read ({error.strerror})"
            ) from error


def _is_storage_data_upload(url: str) -> bool:
    """Whether ``url`` is Label Studio's proxy URL of an upload (path and ``filepath=upload/...``)."""
    parts = urlsplit(url)
    filepaths = parse_qs(parts.query).get("filepath") or [""]
    return parts.path == STORAGE_DATA_PATH and filepaths[-1].startswith("upload/")
