"""Turn whatever a user hands us into an 8-bit RGB array, or say clearly why not."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# About 10x a 12-megapixel photo: beyond this the label map alone outgrows a reasonable memory budget.
DEFAULT_MAX_PIXELS = 120_000_000


class ImageError(ValueError):
    """The input is not a usable image."""


def load_image(source: str | Path | bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file (path, bytes or binary file object) to uint8 (H, W, 3) RGB, EXIF-upright."""
    name = str(source) if isinstance(source, str | Path) else "image data"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise ImageError(f"{name}: {width}x{height} exceeds the limit of {max_pixels} pixels")
            opened.load()
            image = ImageOps.exif_transpose(opened)
            return to_rgb8(image)
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: too many pixels to decode safely ({error})") from error
    except FileNotFoundError as error:
        raise ImageError(f"{name}: no such file") from error
    except IsADirectoryError as error:
        raise ImageError(f"{name}: is a directory, not an image file") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{name}: not an image file (format not recognised)") from error
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"{name}: corrupt or truncated image ({error})") from error


def to_rgb8(image: Image.Image) -> np.ndarray:
    """RGB uint8 from any PIL mode: 16-bit and float are rescaled, alpha is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
