"""Face thumbnails for the review page: a square crop around the face box, JPEG-encoded."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray


def face_thumbnail(pixels: NDArray[np.uint8], bbox: Sequence[float], size: int, *, margin: float = 0.25) -> bytes:
    """JPEG bytes of a `size`×`size` crop centred on the face box `[x, y, w, h]` of RGB `pixels`,
    `margin` of the box's longer side added around it; parts outside the photo are grey."""
    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    scale = size / max(side, 1.0)
    # One affine warp does crop, padding and resize together.
    matrix = np.array([[scale, 0.0, size / 2.0 - cx * scale], [0.0, scale, size / 2.0 - cy * scale]])
    crop = cv2.warpAffine(
        pixels, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)
    )
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("the thumbnail could not be encoded")
    return bytes(encoded.tobytes())
