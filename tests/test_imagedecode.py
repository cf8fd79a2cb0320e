"""Decoding real photos in every supported format, and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facecluster.engine.decode import ImageDecodeError, decode_image

LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def photo(photos_dir: Path) -> Image.Image:
    return Image.open(photos_dir / "group" / "face_recognition_two_people.jpg").convert("RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF"])
def test_formats_decode_to_the_same_rgb_picture(photo: Image.Image, fmt: str) -> None:
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif")
    decoded = decode_image(encode(photo, fmt), **LIMITS)
    reference = np.asarray(photo, dtype=np.float32)
    assert decoded.pixels.shape == reference.shape
    assert decoded.pixels.dtype == np.uint8
    lossy = fmt in {"JPEG", "WEBP", "HEIF"}
    assert np.abs(decoded.pixels.astype(np.float32) - reference).mean() < (8.0 if lossy else 1e-6)


def test_exif_orientation_is_applied(photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_image(encode(photo, "JPEG", exif=exif.tobytes()), **LIMITS)
    assert (decoded.width, decoded.height) == (photo.height, photo.width)


def test_a_large_jpeg_is_decoded_reduced_then_oriented(photo: Image.Image) -> None:
    big = photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.BILINEAR)  # 4504 x 2644
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(big, "JPEG", exif=exif.tobytes(), quality=90)
    full = decode_image(data, **LIMITS)
    reduced = decode_image(data, **LIMITS, min_side=1000)  # 1/4 keeps 1126 >= 1000 on the longer side
    assert reduced.scale == 0.25 and reduced.full_size == (full.width, full.height) == (big.height, big.width)
    assert (reduced.width, reduced.height) == (big.height // 4, big.width // 4)  # oriented after reducing
    shrunk = np.asarray(Image.fromarray(full.pixels).resize((reduced.width, reduced.height), Image.Resampling.BOX))
    assert np.abs(shrunk.astype(np.float32) - reduced.pixels).mean() < 6.0  # the same picture
    assert decode_image(data, **LIMITS, min_side=2300).scale == 1.0  # 1/2 would fall below: full size
    assert decode_image(encode(big, "PNG"), **LIMITS, min_side=1000).scale == 1.0  # only JPEGs reduce
    with pytest.raises(ImageDecodeError) as truncated:
        decode_image(data[: len(data) // 2], **LIMITS, min_side=1000)
    assert truncated.value.code == "truncated"


def test_tiles_cover_the_photo_and_overlap() -> None:
    from facecluster.engine.detector import tile_windows

    windows = tile_windows(4000, 3000, 2)
    assert len(windows) == 4
    left, right = sorted({(w[0], w[2]) for w in windows})
    assert left[0] == 0 and right[1] == 4000 and right[0] < left[1]  # overlapping, edge to edge
    assert max(w[3] for w in windows) == 3000 and len(tile_windows(640, 480, 3)) == 9


def test_grey_palette_and_cmyk_become_rgb(photo: Image.Image) -> None:
    for mode in ("L", "P", "CMYK", "1"):
        fmt = "TIFF" if mode == "CMYK" else "PNG"
        decoded = decode_image(encode(photo.convert(mode), fmt), **LIMITS)
        assert decoded.pixels.shape == (photo.height, photo.width, 3), mode
    grey = decode_image(encode(photo.convert("L"), "PNG"), **LIMITS).pixels
    assert np.array_equal(grey[..., 0], grey[..., 2])


def test_transparency_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 10, 10))
    pixels = decode_image(encode(rgba, "PNG"), **LIMITS).pixels
    assert pixels[5, 2].tolist() == [0, 0, 255]
    assert pixels[5, 15].tolist() == [255, 255, 255]


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 256, dtype=np.float64)[None, :].repeat(4, axis=0)).astype(np.uint16)
    pixels = decode_image(encode(Image.fromarray(ramp), "PNG"), **LIMITS).pixels
    assert pixels[0, 0, 0] == 0
    assert pixels[0, -1, 0] == 255
    assert 120 <= pixels[0, 128, 0] <= 135  # mid-grey stays mid-grey


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"this is not an image at all" * 10, "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image"),
    ],
)
def test_bad_bytes_give_typed_errors(data: bytes, code: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, **LIMITS)
    assert caught.value.code == code
    assert caught.value.reason


def test_truncated_jpeg(photo: Image.Image) -> None:
    data = encode(photo, "JPEG")
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data[: len(data) // 2], **LIMITS)
    assert caught.value.code == "truncated"
    assert "damaged" in str(caught.value)


def test_byte_limit() -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**6)
    assert caught.value.code == "too_large"


def test_pixel_limit_stops_a_decompression_bomb_before_decoding() -> None:
    bomb = encode(Image.new("L", (6000, 6000)), "PNG")  # tiny file, 36 megapixels
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bomb, max_bytes=10**6, max_pixels=10_000_000)
    assert caught.value.code == "too_many_pixels"
    assert "36,000,000" in caught.value.reason


def test_unsupported_format_is_named() -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(encode(Image.new("RGB", (8, 8)), "PPM"), **LIMITS)
    assert caught.value.code == "unsupported_format"
    assert "PPM" in caught.value.reason
