"""The detectors on real photos: recall on annotated group photos, batching, landmarks, close-ups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecluster.engine.detector import Detection, letterbox, nms
from facecluster.engine.faces import FaceEngine, detect_batch_size, load_detector
from facecluster.engine.registry import load_registry
from facecluster.eval.accuracy import detection_recall, read_boxes
from facecluster.settings import Settings

from .conftest import load


@pytest.mark.parametrize("name", list(load_registry().detectors))
def test_recall_on_annotated_group_photos(settings: Settings, photos_dir: Path, name: str) -> None:
    engine = FaceEngine(settings, load_detector(settings, name), FaceEngine.from_settings(settings).embedder)
    boxes = photos_dir / "group" / "face_boxes.csv"
    report = detection_recall(engine, photos_dir, boxes, iou=0.4)
    assert (report.images, report.annotated) == (9, 43)
    assert report.recall >= 0.97, f"{name}: {report.matched}/{report.annotated} faces found at IoU 0.4"
    assert report.detections <= report.annotated + 12, f"{name}: {report.detections} detections"
    for path, truth in read_boxes(boxes).items():
        found = engine.detect([load(photos_dir / path)])[0]
        assert len(found) >= len(truth) - 1, f"{name} found {len(found)} faces in {path}, {len(truth)} annotated"


def test_batched_equals_one_at_a_time(engine: FaceEngine, photos_dir: Path) -> None:
    images = [load(p) for p in sorted((photos_dir / "group").glob("dlib_voc_*.jpg"))[:5]]
    batched = engine.detector.detect(images, batch_size=5)
    single = [engine.detector.detect([image], batch_size=1)[0] for image in images]
    for many, one in zip(batched, single, strict=True):
        assert len(many) == len(one)
        for a, b in zip(many, one, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-3)
            assert abs(a.score - b.score) < 1e-5


def test_boxes_and_landmarks_are_in_original_coordinates(engine: FaceEngine, photos_dir: Path) -> None:
    image = load(photos_dir / "group" / "face_recognition_two_people.jpg")
    double = np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1))
    small, large = engine.detector.detect([image, double])
    assert len(small) == len(large) == 2
    for a, b in zip(sorted(small, key=lambda f: f.box[0]), sorted(large, key=lambda f: f.box[0]), strict=True):
        assert np.allclose(a.box * 2, b.box, atol=6)
        assert np.allclose(a.landmarks * 2, b.landmarks, atol=6)


def test_landmark_order_and_orientation(engine: FaceEngine, photos_dir: Path) -> None:
    for face in engine.detector.detect([load(photos_dir / "enrol" / "obama" / "obama.jpg")])[0]:
        left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
        x1, y1, x2, y2 = face.box
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_a_face_filling_the_frame_is_found(engine: FaceEngine, photos_dir: Path) -> None:
    image = load(photos_dir / "enrol" / "obama" / "obama.jpg")
    face = max(engine.detector.detect([image])[0], key=lambda f: f.score)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    inset_x, inset_y = (x2 - x1) // 10, (y2 - y1) // 10
    close_up = np.ascontiguousarray(image[y1 + inset_y : y2 - inset_y, x1 + inset_x : x2 - inset_x])
    found = engine.detector.detect([close_up])[0]
    assert len(found) >= 1
    assert max(f.score for f in found) >= 0.5


def test_letterbox_keeps_aspect_and_maps_back() -> None:
    image = np.zeros((300, 600, 3), np.uint8)
    box = letterbox(image, 640, 114)
    assert box.canvas.shape == (640, 640, 3)
    assert box.scale == pytest.approx(640 / 600)
    assert box.canvas[-1, 0].tolist() == [114, 114, 114]  # padded bottom
    padded = letterbox(image, 640, 114, border=0.25)
    assert padded.scale == pytest.approx(640 / 900)
    assert padded.pad_x > 0 and padded.pad_y > 0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]


def test_engine_thresholds_loosen_and_tighten(engine: FaceEngine, photos_dir: Path) -> None:
    image = load(photos_dir / "group" / "insightface_worlds-largest-selfie.jpg")
    loose = engine.detect([image], min_confidence=0.3, min_size=0)[0]
    default = engine.detect([image])[0]
    strict = engine.detect([image], min_confidence=0.8, min_size=40)[0]
    assert len(loose) > len(default) > len(strict)
    assert all(f.detection.score >= engine.min_confidence for f in default)
    assert all(isinstance(f.detection, Detection) and f.detection.size >= 40 for f in strict)


def test_a_users_own_yolo_file_is_decoded_as_its_signature_says(settings: Settings, photos_dir: Path) -> None:
    from facecluster.engine.embedder import ModelContractError

    models = settings.resolved_models_dir
    group = load(photos_dir / "group" / "insightface_t1.jpg")
    own = load_detector(settings.updated(detector_path=models / "yolov8-lite-t-face_dynbatch.onnx"))
    assert settings.models.detector == "yolov5n-0.5-face" and own.spec.family == "yolov8-face"
    assert len(own.detect([group])[0]) == 6
    fixed = load_detector(settings.updated(detector_path=models / "yunet_s_640_640.onnx"))
    assert fixed.spec.family == "yunet" and fixed.size == 640 and len(fixed.detect([group])[0]) == 6
    with pytest.raises(ModelContractError, match="not a face detector this service decodes"):
        load_detector(settings.updated(detector_path=models / "mobilefacenet_foamliu_dyn.onnx"))


def test_the_detector_runs_photo_by_photo_on_cpu_unless_told(settings: Settings) -> None:
    """On CPU batches of canvases only add memory traffic; a configured batch size is kept."""
    detector = load_detector(settings)
    assert detector.session.get_providers()[0] == "CPUExecutionProvider"
    assert detect_batch_size(settings, detector) == 1
    assert detect_batch_size(settings.updated(detect_batch_size=4), detector) == 4
