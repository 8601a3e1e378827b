"""Why a task could not be predicted. Each class carries the ``reason`` counted in /metrics."""

from __future__ import annotations


class TaskError(Exception):
    """A problem confined to one task (or one project config): that task gets an error entry."""

    reason = "internal"


class TaskDataError(TaskError):
    """The task's data lacks the image field the label config points at, or it is not a string."""

    reason = "task_data"


class ImageSourceError(TaskError):
    """The image URL is of a kind, scheme, host or path the download policy refuses."""

    reason = "image_source"


class BlockedAddressError(ImageSourceError):
    """A download would connect to a private, loopback or otherwise non-public address."""


class ImageFetchError(TaskError):
    """The image could not be downloaded or read: HTTP error, timeout, connection failure, missing file."""

    reason = "image_fetch"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when the server answered with an error


class UntrustedCertificateError(ImageFetchError):
    """An HTTPS server's certificate is not signed by a trusted authority (or names another host):
    CA_BUNDLE (or REQUESTS_CA_BUNDLE / SSL_CERT_FILE) must name the authority of a private CA."""

    reason = "tls_certificate"


class ImageTooLargeError(TaskError):
    """The image file exceeds MAX_IMAGE_BYTES."""

    reason = "image_too_large"


class ImageDecodeError(TaskError):
    """The bytes are not a decodable image, or it has more pixels than MAX_IMAGE_PIXELS."""

    reason = "image_decode"


class SegmentationError(TaskError):
    """The segmentor failed on a decoded image (out of memory, a numerical failure...)."""

    reason = "segmentation"


class ProjectConfigError(TaskError):
    """The label config cannot be served: no PolygonLabels/BrushLabels control, or a bad emerdiff-* attribute.

    The config is the request's, so every task of the request gets this error."""

    reason = "label_config"


class OutputValidationError(TaskError):
    """Our own regions failed validation against the label config (a bug, never sent to Label Studio)."""

    reason = "invalid_region"
