"""The quality score on real faces and the seed's profile checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facecluster.engine.align import ARCFACE_TEMPLATE
from facecluster.engine.faces import FaceEngine
from facecluster.engine.quality import ProfileChecks, pose_symmetry

from .conftest import load


def test_score_is_bounded_and_reports_its_parts(engine: FaceEngine, photos_dir: Path) -> None:
    faces = engine.detect([load(photos_dir / "group" / "insightface_t1.jpg")])[0]
    assert len(faces) == 6
    for face in faces:
        parts = face.quality.to_dict()
        assert set(parts) == {"score", "confidence", "size", "blur", "pose", "face_size", "blur_variance"}
        for key in ("score", "confidence", "size", "blur", "pose"):
            assert 0.0 <= parts[key] <= 1.0


def test_blur_lowers_the_score(engine: FaceEngine, photos_dir: Path) -> None:
    image = load(photos_dir / "enrol" / "obama" / "obama.jpg")
    sharp = max(engine.detect([image])[0], key=lambda f: f.detection.size).quality
    blurred = max(engine.detect([cv2.GaussianBlur(image, (0, 0), 6)])[0], key=lambda f: f.detection.size).quality
    assert blurred.blur_variance < sharp.blur_variance / 10
    assert blurred.blur < sharp.blur and blurred.score < sharp.score
    checks = ProfileChecks(min_face_size=30, min_confidence=0.4, blur_threshold=50)
    assert checks.failures(sharp) == []
    assert any("blur" in reason for reason in checks.failures(blurred))


@pytest.mark.fast
def test_frontal_template_is_symmetric_and_a_turned_face_is_not() -> None:
    assert pose_symmetry(ARCFACE_TEMPLATE) > 0.95
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] += 20.0  # nose well off the midline
    assert pose_symmetry(turned) < 0.2


def test_looser_profile_values_really_loosen(engine: FaceEngine, photos_dir: Path) -> None:
    # The detector runs at a low floor, so faces under the seed's 0.5 are there to be accepted.
    image = load(photos_dir / "group" / "insightface_worlds-largest-selfie.jpg")
    faces = engine.detect([image], min_confidence=0.0, min_size=0)[0]
    strict = ProfileChecks(min_face_size=30, min_confidence=0.5, blur_threshold=50)
    lenient = ProfileChecks(min_face_size=10, min_confidence=0.3, blur_threshold=30)
    strict_pass = sum(not strict.failures(f.quality) for f in faces)
    lenient_pass = sum(not lenient.failures(f.quality) for f in faces)
    assert lenient_pass > strict_pass
    weak = [f for f in faces if 0.3 <= f.detection.score < 0.5]
    assert weak and all(any("min_confidence 0.5" in r for r in strict.failures(f.quality)) for f in weak)
    assert not np.isnan([f.quality.score for f in faces]).any()
