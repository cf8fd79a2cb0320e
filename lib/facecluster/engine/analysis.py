"""Uploaded photos through the face engine: every face above the detector's floor, embedded.

The result is plain data (it crosses process boundaries in Ray Serve); each request applies its
own thresholds afterwards, so requests with different thresholds share one model batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.engine.decode import ImageDecodeError, decode_photo
from facecluster.engine.faces import FaceEngine
from facecluster.engine.quality import ProfileChecks
from facecluster.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class FaceResult:
    bbox: list[float]  # x, y, width, height in original pixels
    score: float
    landmarks: list[list[float]]
    quality: dict[str, float]
    embedding: list[float]

    @property
    def vector(self) -> NDArray[np.float32]:
        return np.asarray(self.embedding, dtype=np.float32)

    def public(self) -> dict[str, Any]:
        """What an API response shows of the face (no vector)."""
        return {"bbox": [round(v, 1) for v in self.bbox], "score": round(self.score, 4), "quality": self.quality}


@dataclass(frozen=True, slots=True)
class ImageAnalysis:
    width: int = 0
    height: int = 0
    faces: list[FaceResult] = field(default_factory=list)
    error_code: str | None = None
    error: str | None = None

    def faces_above(self, min_confidence: float, min_face_size: float = 0.0) -> list[FaceResult]:
        return [f for f in self.faces if f.score >= min_confidence and f.quality["face_size"] >= min_face_size]


def analyze_uploads(engine: FaceEngine, blobs: Sequence[bytes]) -> list[ImageAnalysis]:
    """Decode, detect at the detector's floor, assess and embed the faces of several uploads at once;
    an undecodable upload gets its error, the others go on."""
    settings = engine.settings
    decoded: list[tuple[int, NDArray[np.uint8]]] = []
    out: list[ImageAnalysis] = [ImageAnalysis() for _ in blobs]
    for index, blob in enumerate(blobs):
        try:
            image = decode_photo(blob, settings.images)
        except ImageDecodeError as exc:
            out[index] = ImageAnalysis(error_code=exc.code, error=exc.reason)
            continue
        decoded.append((index, image.pixels))
    if not decoded:
        return out
    images = [pixels for _, pixels in decoded]
    faces = engine.analyze(images, min_confidence=engine.detector.spec.score_floor, min_size=0.0)
    for (index, pixels), image_faces in zip(decoded, faces, strict=True):
        results = [
            FaceResult(
                bbox=f.detection.xywh,
                score=float(f.detection.score),
                landmarks=np.asarray(f.detection.landmarks, dtype=float).round(2).tolist(),
                quality={k: round(float(v), 4) for k, v in f.quality.to_dict().items()},
                embedding=[] if f.embedding is None else f.embedding.astype(float).tolist(),
            )
            for f in image_faces
        ]
        out[index] = ImageAnalysis(width=int(pixels.shape[1]), height=int(pixels.shape[0]), faces=results)
    return out


class ProfileRejected(InvalidInput):
    """A profile photo that does not show exactly one face passing the checks; `details` says why."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details

    @property
    def detail(self) -> dict[str, Any]:
        return {"message": str(self), **self.details}


def profile_face(analysis: ImageAnalysis, checks: ProfileChecks, detector_threshold: float) -> FaceResult:
    """The one face of a profile photo that passes `checks`. Faces are counted from the looser of
    the detector's threshold and the request's `min_confidence`."""
    thresholds = {
        "min_face_size": checks.min_face_size,
        "min_confidence": checks.min_confidence,
        "blur_threshold": checks.blur_threshold,
    }
    candidates = analysis.faces_above(min(detector_threshold, checks.min_confidence))
    verdicts = [(face, _failures(face, checks)) for face in candidates]
    passing = [face for face, reasons in verdicts if not reasons]
    if len(passing) == 1:
        return passing[0]
    details: dict[str, Any] = {
        "faces_found": len(candidates),
        "faces_passing": len(passing),
        "thresholds": thresholds,
        "faces": [{**face.public(), "failures": reasons} for face, reasons in verdicts],
    }
    if not candidates:
        raise ProfileRejected("no face found in the photo", details)
    if passing:
        raise ProfileRejected(
            f"{len(passing)} faces pass the quality checks: a profile photo must show exactly one", details
        )
    raise ProfileRejected("no face passes the quality checks", details)


def _failures(face: FaceResult, checks: ProfileChecks) -> list[str]:
    q = face.quality
    return checks.failures_of(face_size=q["face_size"], confidence=face.score, blur_variance=q["blur_variance"])
