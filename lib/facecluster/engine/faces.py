"""The face engine: detector, aligner, quality and embedder over many images at once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from facecluster.engine.align import crop_faces, crop_matrix
from facecluster.engine.detector import Detection, FaceDetector, build_detector, own_detector_spec
from facecluster.engine.embedder import FaceEmbedder
from facecluster.engine.quality import Quality, QualityWeights, assess
from facecluster.engine.registry import DetectorSpec, EmbedderSpec, ModelSpec, load_registry
from facecluster.engine.sessions import cached_session, runs_on_gpu, select_providers
from facecluster.errors import Unavailable
from facecluster.settings import Settings


class ModelFileMissing(Unavailable):
    """A model's ONNX file is not in the models directory."""


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face with its quality and, once embedded, its unit vector."""

    detection: Detection
    quality: Quality
    embedding: NDArray[np.float32] | None = None


def model_path(settings: Settings, spec: ModelSpec) -> Path:
    """Where `spec`'s file is: the user's own embedder or detector file, or the models directory."""
    own = settings.models.embedder_path if isinstance(spec, EmbedderSpec) else settings.models.detector_path
    path = own.expanduser() if own is not None else settings.resolved_models_dir / spec.file
    if not path.is_file():
        raise ModelFileMissing(
            f"model file {path} not found for {spec.name!r}: run `facecluster models pull` "
            f"or point FACECLUSTER_MODELS_DIR at a folder that holds {spec.file}"
        )
    return path


def require_models(settings: Settings) -> None:
    """Refuse, naming the file, when the configured detector's or embedder's file is missing: before a
    service starts processes that would each fail on it."""
    registry = load_registry()
    model_path(settings, registry.detector(settings.models.detector))
    model_path(settings, registry.embedder(settings.models.embedder))


def quality_weights(settings: Settings) -> QualityWeights:
    return QualityWeights(
        confidence=settings.profiles.quality_weight_confidence,
        size=settings.profiles.quality_weight_size,
        blur=settings.profiles.quality_weight_blur,
        pose=settings.profiles.quality_weight_pose,
    )


def min_confidence(settings: Settings, spec: DetectorSpec) -> float:
    """Detections below this are not faces: the setting, else the detector's calibrated threshold."""
    return settings.detection.min_confidence if settings.detection.min_confidence is not None else spec.score_threshold


def keep_faces(
    detections: list[Detection], *, min_confidence: float, min_face_size: float, scale: float = 1.0
) -> list[Detection]:
    """Detections that are faces: at least `min_confidence`, and `min_face_size` original pixels
    across (`scale` is the detection image's size relative to the original photo)."""
    return [d for d in detections if d.score >= min_confidence and d.size / scale >= min_face_size]


def assess_faces(
    image: NDArray[np.uint8], detections: list[Detection], weights: QualityWeights, *, scale: float = 1.0
) -> list[Face]:
    """Quality of each detection of one image, measured on its 112 x 112 ArcFace-aligned crop."""
    crops = crop_faces(image, detections, 112, "arcface")
    return [
        Face(d, assess(d, crop, crop_matrix(d, 112, "arcface"), weights, scale=scale))
        for d, crop in zip(detections, crops, strict=True)
    ]


def model_version(settings: Settings, spec: ModelSpec) -> str:
    """`<name>@<first 12 hex of the file's sha256>`: what every stored vector records."""
    return f"{spec.name}@{hashlib.sha256(model_path(settings, spec).read_bytes()).hexdigest()[:12]}"


def _session_for(settings: Settings, spec: ModelSpec) -> ort.InferenceSession:
    return cached_session(
        model_path(settings, spec),
        tuple(select_providers(settings.models.providers)),
        settings.models.intra_op_threads,
        settings.models.inter_op_threads,
        settings.models.ort_spinning,
    )


def load_detector(settings: Settings, name: str | None = None) -> FaceDetector:
    """The configured detector; a user's own file (YOLO_MODEL_PATH) is decoded as its signature says."""
    registry = load_registry()
    spec: DetectorSpec = registry.detector(name or settings.models.detector)
    session = _session_for(settings, spec)
    if settings.models.detector_path is not None and name is None:
        spec = own_detector_spec(spec, session, list(registry.detectors.values()))
    return build_detector(spec, session)


def detect_batch_size(settings: Settings, detector: FaceDetector) -> int:
    """Photos per detector run: `detect_batch_size`, else 8 on a GPU and 1 on CPU."""
    configured = settings.detection.detect_batch_size
    if configured:
        return configured
    return 8 if runs_on_gpu(detector.session) else 1


def load_embedder(settings: Settings, name: str | None = None) -> FaceEmbedder:
    spec: EmbedderSpec = load_registry().embedder(name or settings.models.embedder)
    return FaceEmbedder(spec, _session_for(settings, spec))


class FaceEngine:
    """Detect → align → quality → embed, batched across images; no Ray here."""

    def __init__(self, settings: Settings, detector: FaceDetector, embedder: FaceEmbedder) -> None:
        self.settings = settings
        self.detector = detector
        self.embedder = embedder
        self.weights = quality_weights(settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceEngine:
        return cls(settings, load_detector(settings), load_embedder(settings))

    @property
    def detect_batch_size(self) -> int:
        return detect_batch_size(self.settings, self.detector)

    @property
    def min_confidence(self) -> float:
        return min_confidence(self.settings, self.detector.spec)

    def detect(
        self, images: Sequence[NDArray[np.uint8]], *, min_confidence: float | None = None, min_size: float | None = None
    ) -> list[list[Face]]:
        """Faces of each image with their quality, at least `min_confidence` and `min_size` pixels."""
        floor = self.min_confidence if min_confidence is None else min_confidence
        smallest = self.settings.detection.min_face_size if min_size is None else min_size
        batch, score_floor = self.detect_batch_size, min(floor, self.detector.spec.score_floor)
        found = self.detector.detect(images, batch_size=batch, score_floor=score_floor)
        tiles = self.settings.detection.detect_tiles
        found = self.detector.add_tiles(found, images, tiles=tiles, batch_size=batch, score_floor=score_floor)
        return [
            self.assess(image, keep_faces(detections, min_confidence=floor, min_face_size=smallest))
            for image, detections in zip(images, found, strict=True)
        ]

    def assess(self, image: NDArray[np.uint8], detections: list[Detection], *, scale: float = 1.0) -> list[Face]:
        return assess_faces(image, detections, self.weights, scale=scale)

    def keep(self, detections: list[Detection], *, scale: float = 1.0) -> list[Detection]:
        return keep_faces(
            detections,
            min_confidence=self.min_confidence,
            min_face_size=self.settings.detection.min_face_size,
            scale=scale,
        )

    def embed(self, images: Sequence[NDArray[np.uint8]], faces: Sequence[list[Face]]) -> list[list[Face]]:
        """The same faces with their embeddings, all faces of all images in shared model batches."""
        crops = [
            crop_faces(image, [f.detection for f in image_faces], self.embedder.size, self.embedder.alignment)
            for image, image_faces in zip(images, faces, strict=True)
        ]
        flat = np.concatenate(crops) if crops else np.zeros((0, self.embedder.size, self.embedder.size, 3), np.uint8)
        vectors = self.embedder.embed(flat, batch_size=self.settings.detection.embed_batch_size)
        out: list[list[Face]] = []
        offset = 0
        for image_faces in faces:
            out.append([Face(f.detection, f.quality, vectors[offset + i]) for i, f in enumerate(image_faces)])
            offset += len(image_faces)
        return out

    def analyze(self, images: Sequence[NDArray[np.uint8]], **detect_options: float | None) -> list[list[Face]]:
        """Detect, assess and embed every face of every image."""
        return self.embed(images, self.detect(images, **detect_options))
