"""Face quality: a bounded 0–1 score from confidence, size, blur and pose, every part reported.

Blur is the variance of the Laplacian on the face aligned to 112 x 112, so a small sharp face and
a large sharp face score alike. Pose is the symmetry of the aligned landmarks: on a frontal face
the nose sits midway between the eyes and between the mouth corners.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from facecluster.engine.detector import Detection

#: Faces this many pixels across (shorter box side) or more get the full size part.
FULL_SIZE_PX: Final = 112.0
#: Laplacian variance at which the blur part is one half; calibrated on LFW (BENCHMARKS.md).
BLUR_HALF_POINT: Final = 100.0
#: Nose offset from the eye and mouth midlines, as a fraction of the eye distance, that scores 0.
POSE_ZERO_OFFSET: Final = 0.5


@dataclass(frozen=True, slots=True)
class QualityWeights:
    confidence: float = 0.3
    size: float = 0.25
    blur: float = 0.25
    pose: float = 0.2


QUALITY_FIELDS: Final = ("score", "confidence", "size", "blur", "pose", "face_size", "blur_variance")


@dataclass(frozen=True, slots=True)
class Quality:
    """The score and its parts (each 0–1), plus the raw measures behind them."""

    score: float
    confidence: float
    size: float
    blur: float
    pose: float
    face_size: float  # pixels, shorter side of the box
    blur_variance: float  # Laplacian variance on the 112 x 112 aligned crop

    def to_dict(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in asdict(self).items()}


def blur_variance(aligned: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of an aligned RGB crop, resized to 112 x 112 if needed."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    if grey.shape != (112, 112):
        grey = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def pose_symmetry(aligned_landmarks: NDArray[np.floating]) -> float:
    """1 for a frontal face, falling to 0 as the nose moves off the eye and mouth midlines."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(aligned_landmarks, dtype=np.float64)
    eye_distance = max(float(np.linalg.norm(right_eye - left_eye)), 1e-6)
    eye_offset = abs(nose[0] - (left_eye[0] + right_eye[0]) / 2.0)
    mouth_offset = abs(nose[0] - (mouth_left[0] + mouth_right[0]) / 2.0)
    offset = (eye_offset + mouth_offset) / 2.0 / eye_distance
    return float(np.clip(1.0 - offset / POSE_ZERO_OFFSET, 0.0, 1.0))


def assess(
    face: Detection,
    aligned: NDArray[np.uint8],
    align_matrix: NDArray[np.floating],
    weights: QualityWeights = QualityWeights(),
    *,
    scale: float = 1.0,
) -> Quality:
    """Quality of `face`, given its aligned crop and the matrix that produced it.

    `scale` is the size of the detection's image relative to the original photo (below 1 when a
    pipeline works on a downscaled copy), so face_size is always in original pixels.
    """
    variance = blur_variance(aligned)
    aligned_landmarks = face.landmarks @ np.asarray(align_matrix)[:, :2].T + np.asarray(align_matrix)[:, 2]
    parts = {
        "confidence": float(np.clip(face.score, 0.0, 1.0)),
        "size": float(min(1.0, face.size / scale / FULL_SIZE_PX)),
        "blur": variance / (variance + BLUR_HALF_POINT),
        "pose": pose_symmetry(aligned_landmarks),
    }
    weight = {"confidence": weights.confidence, "size": weights.size, "blur": weights.blur, "pose": weights.pose}
    total = sum(weight.values())
    score = sum(parts[k] * weight[k] for k in parts) / total if total > 0 else 0.0
    return Quality(score=score, face_size=face.size / scale, blur_variance=variance, **parts)


@dataclass(frozen=True, slots=True)
class ProfileChecks:
    """Profile checks: the thresholds a face must meet to enrol someone."""

    min_face_size: float
    min_confidence: float
    blur_threshold: float

    def failures(self, quality: Quality) -> list[str]:
        """Readable reasons this face fails, empty when it passes."""
        return self.failures_of(
            face_size=quality.face_size, confidence=quality.confidence, blur_variance=quality.blur_variance
        )

    def failures_of(self, *, face_size: float, confidence: float, blur_variance: float) -> list[str]:
        reasons = []
        if face_size < self.min_face_size:
            reasons.append(f"face is {face_size:.0f} px, smaller than min_face_size {self.min_face_size:g}")
        if confidence < self.min_confidence:
            reasons.append(f"detection confidence {confidence:.2f} is below min_confidence {self.min_confidence:g}")
        if blur_variance < self.blur_threshold:
            reasons.append(
                f"blur score {blur_variance:.1f} is below blur_threshold {self.blur_threshold:g} (too blurry)"
            )
        return reasons
