"""Face crops for the embedder: 5-point ArcFace alignment, or FaceNet-style box crops."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from facecluster.engine.detector import Detection
from facecluster.engine.registry import Alignment

#: The standard ArcFace 112 x 112 template: left eye, right eye, nose, left and right mouth corner.
ARCFACE_TEMPLATE: Final = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
#: FaceNet crops: the detector box grown by this fraction of its size in total (davidsandberg's
#: 32 px margin on a 160 px crop), made square and centred.
FACENET_MARGIN: Final = 0.2


def similarity_transform(src: NDArray[np.floating], dst: NDArray[np.floating]) -> NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def crop_matrix(face: Detection, size: int, alignment: Alignment) -> NDArray[np.float64]:
    """The 2 x 3 affine matrix that maps the image onto the `size` x `size` crop of `face`."""
    if alignment == "arcface":
        return similarity_transform(face.landmarks, ARCFACE_TEMPLATE * (size / 112.0))
    x1, y1, x2, y2 = (float(v) for v in face.box)
    side = max(x2 - x1, y2 - y1) * (1.0 + FACENET_MARGIN)
    scale = size / side
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return np.array([[scale, 0.0, size / 2.0 - scale * cx], [0.0, scale, size / 2.0 - scale * cy]])


def crop_faces(image: NDArray[np.uint8], faces: list[Detection], size: int, alignment: Alignment) -> NDArray[np.uint8]:
    """The faces of one RGB image as an N x size x size x 3 uint8 array."""
    crops = np.empty((len(faces), size, size, 3), dtype=np.uint8)
    for i, face in enumerate(faces):
        crops[i] = cv2.warpAffine(
            image,
            crop_matrix(face, size, alignment),
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    return crops
