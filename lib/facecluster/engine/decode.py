"""Decoding photos from bytes into RGB arrays, safely.

Every failure is an `ImageDecodeError` whose `code` names the kind and whose message a person can
read; nothing else escapes. Limits on bytes and pixels stop decompression bombs before decoding.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facecluster.errors import InvalidInput
from facecluster.settings import ImagesSettings

ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS: Final = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "HEIF", "AVIF", "GIF"})
#: File name endings a folder or bucket listing treats as photos.
IMAGE_SUFFIXES: Final = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".gif"}
)

try:  # HEIC/HEIF when the optional plugin is installed.
    from pillow_heif import register_heif_opener  # type: ignore[import-not-found, unused-ignore]

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the optional extra
    pass


class ImageDecodeError(InvalidInput):
    """A photo that cannot be used, with a machine-readable `code` and a readable reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An RGB photo, EXIF orientation applied; `scale` < 1 when a JPEG was decoded reduced."""

    pixels: NDArray[np.uint8]  # H x W x 3, RGB
    format: str
    scale: float = 1.0  # pixels = the full-size photo (after orientation) x scale
    full_size: tuple[int, int] = (0, 0)  # the full-size photo's width and height, after orientation

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def decode_photo(data: bytes, limits: ImagesSettings, *, min_side: int | None = None) -> DecodedImage:
    """`decode_image` within the configured limits on bytes and pixels."""
    return decode_image(data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, min_side=min_side)


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int | None = None) -> DecodedImage:
    """Decode `data` (JPEG, PNG, WebP, BMP, TIFF, HEIC with pillow-heif, …) into RGB uint8. With
    `min_side`, a JPEG is decoded in the DCT domain at the largest reduction (1/2, 1/4, 1/8) whose longer
    side is still at least `min_side`: a quarter or less of the work for a 12-megapixel photo."""
    if not data:
        raise ImageDecodeError("empty", "the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageDecodeError("too_large", f"the file has {len(data):,} bytes, more than the limit of {max_bytes:,}")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's warning; its hard error still stands.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageDecodeError("unsupported_format", f"{fmt} images are not supported")
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError("corrupt", f"the image claims a size of {width}x{height}")
            if width * height > max_pixels:
                raise ImageDecodeError(
                    "too_many_pixels",
                    f"the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
                    f"{max_pixels:,} (decompression bomb guard)",
                )
            if min_side is not None and fmt in ("JPEG", "MPO") and max(width, height) >= 2 * min_side:
                factor = min_side / max(width, height)
                img.draft("RGB", (math.ceil(width * factor), math.ceil(height * factor)))
            scale = img.size[0] / width
            img.load()
            oriented = ImageOps.exif_transpose(img)  # after the reduced decode: the EXIF tag stays with it
            full = (width, height) if oriented.size == img.size else (height, width)  # rotated by EXIF
            return DecodedImage(pixels=_to_rgb(oriented), format=fmt, scale=scale, full_size=full)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not_an_image", "the bytes are not an image of any supported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", f"decompression bomb: {exc}") from None
    except OSError as exc:
        message = str(exc)
        code = "truncated" if "truncated" in message or "broken data stream" in message else "corrupt"
        raise ImageDecodeError(code, f"the image data is damaged: {message}") from None
    except (ValueError, SyntaxError, TypeError, IndexError, MemoryError) as exc:
        raise ImageDecodeError("corrupt", f"the image data is damaged: {exc}") from None


def _to_rgb(img: Image.Image) -> NDArray[np.uint8]:
    """Any Pillow mode to H x W x 3 uint8 RGB: grey, palette, alpha, CMYK, 16-bit and float."""
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or grey.max(initial=0.0) > 255.0 else 255.0
        if mode == "F" and grey.max(initial=0.0) <= 1.0:
            top = 1.0
        grey8 = np.clip(grey * (255.0 / top), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
