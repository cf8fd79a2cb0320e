"""Decoding photos from bytes into RGB arrays, safely.

Every failure is an `ImageDecodeError` whose `code` names the kind and whose message a person can
read; nothing else escapes. Limits on bytes and pixels stop decompression bombs before decoding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

import cv2
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
    """Decode `data` (JPEG, PNG, WebP, BMP, TIFF, HEIC with pillow-heif, …) into RGB uint8, EXIF
    orientation applied. With `min_side`, a JPEG is decoded in the DCT domain at the largest reduction
    (1/2, 1/4, 1/8) whose longer side is still at least `min_side`: a 12-megapixel photo at half size
    costs about a sixth of its full decode."""
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
            reduction = _reduction(width, height, min_side) if fmt in ("JPEG", "MPO") else 1
            reduced = _decode_reduced_jpeg(data, reduction) if reduction > 1 else None
            if reduced is not None:
                rotated = (reduced.shape[1] > reduced.shape[0]) != (width > height)  # EXIF turned it
                full = (height, width) if rotated else (width, height)
                return DecodedImage(reduced, fmt, scale=reduced.shape[1] / full[0], full_size=full)
            img.load()
            oriented = ImageOps.exif_transpose(img)
            return DecodedImage(_to_rgb(oriented), fmt, full_size=(oriented.size[0], oriented.size[1]))
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


#: libjpeg's DCT-domain reductions and OpenCV's flags for them.
_REDUCED_FLAGS: Final = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _reduction(width: int, height: int, min_side: int | None) -> int:
    """The largest of 1, 2, 4, 8 that keeps the longer side at least `min_side`."""
    if min_side is None:
        return 1
    return max((r for r in (1, 2, 4, 8) if max(width, height) // r >= min_side), default=1)


def _decode_reduced_jpeg(data: bytes, reduction: int) -> NDArray[np.uint8] | None:
    """A JPEG decoded at 1/`reduction` in the DCT domain (libjpeg-turbo through OpenCV, which applies
    the EXIF orientation), as RGB; None when OpenCV cannot read it (Pillow then decodes it in full)."""
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None  # truncated: OpenCV would fill it in grey; Pillow names it
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[reduction])
    if bgr is None or bgr.ndim != 3:
        return None
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


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
