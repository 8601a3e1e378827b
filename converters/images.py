"""Where a Label Studio task's image lives: a relative COCO ``file_name``, the file on disk, its size.

Task data is attacker-controlled: a reference never reaches outside the folders the user names, and a
``file_name`` never climbs out of the dataset folder (no ``..``, no absolute path) nor holds control
characters (a NUL ends a C string: the name other tools see would not be the one written).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image, UnidentifiedImageError

# Label Studio's URL prefixes for uploaded files and for files of local storage.
UPLOAD_PREFIX = "/data/upload/"
LOCAL_FILES_PREFIX = "/data/local-files/"
# EXIF orientations that turn the picture a quarter: browsers (and so Label Studio) swap its sides.
_QUARTER_TURNS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
# C0 control characters (NUL among them) and DEL: no file name holds them on purpose.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ImageFileError(ValueError):
    """An image file that cannot be found or read; the message names the task."""


def relative_name(reference: str) -> str:
    """A relative POSIX path naming the image of ``reference``, the same for the same reference.

    ``/data/upload/3/a.png`` → ``upload/3/a.png``; ``/data/local-files/?d=x/a.png`` → ``x/a.png``;
    ``s3://bucket/x/a.png`` → ``bucket/x/a.png``; ``https://host/x/a.png`` → ``host/x/a.png``.
    ``..`` and empty parts are dropped, and so are control characters (NUL, newline...).
    """
    parts = urlsplit(reference)
    local_file = parse_qs(parts.query).get("d") if parts.path.startswith(LOCAL_FILES_PREFIX) else None
    if local_file:
        path = local_file[0]
    elif parts.path.startswith(UPLOAD_PREFIX):
        path = parts.path[len("/data/") :]
    else:
        path = f"{parts.netloc}/{parts.path}"
    cleaned = _CONTROL.sub("", unquote(path)).replace("\\", "/")
    kept = [part for part in cleaned.split("/") if part not in ("", ".", "..")]
    return "/".join(kept) or "image"


def unique_names(references: Mapping[object, str]) -> dict[object, str]:
    """Task id → :func:`relative_name` of its image reference, unique per image.

    Tasks showing the same reference share its name (it is one file); different references that land on
    one name are each prefixed ``task-<id>/``. Deterministic: a task's name depends on the export's
    content, not on the order of its tasks.
    """
    names = {key: relative_name(reference) for key, reference in references.items()}
    sources: dict[str, set[str]] = {}
    for key, name in names.items():
        sources.setdefault(name, set()).add(references[key])
    unique = {key: (name if len(sources[name]) == 1 else f"task-{key}/{name}") for key, name in names.items()}
    taken = Counter(unique[key] for key in unique if len(sources[names[key]]) > 1)
    clashes = [name for name in unique.values() if name in sources and taken[name]]
    if clashes:
        raise ImageFileError(f"image names {sorted(set(clashes))} are still shared after prefixing task ids")
    return unique


@dataclass(frozen=True)
class ImageFolders:
    """The folders images are read from: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` (``?d=`` files) and
    its media folder (``<data dir>/media``, holding ``upload/<project>/<file>``)."""

    document_root: Path | None = None
    media_root: Path | None = None

    def path_of(self, reference: str) -> Path | None:
        """The file of ``reference`` inside one of the folders, or None when no folder serves it."""
        parts = urlsplit(reference)
        if parts.scheme or parts.netloc:
            return None
        if parts.path.startswith(LOCAL_FILES_PREFIX) and self.document_root is not None:
            local_file = parse_qs(parts.query).get("d")
            return _inside(self.document_root, local_file[0]) if local_file else None
        if parts.path.startswith(UPLOAD_PREFIX) and self.media_root is not None:
            return _inside(self.media_root, unquote(parts.path[len("/data/") :]))
        return None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` as a browser shows it (EXIF quarter turns applied);
    reads the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageFileError(f"cannot read the size of {path}: {error}") from error
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it resolves inside ``root`` (no ``..`` or symlink escape), else None."""
    if "\x00" in relative:  # no file has one; the OS would refuse the name
        return None
    base = root.resolve()
    candidate = (base / PurePosixPath(relative.lstrip("/"))).resolve()
    return candidate if candidate.is_relative_to(base) else None
