"""Store upkeep: MongoDB faces against Qdrant points (`check`, with repair), and the faces export."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facecluster.engine.align import crop_faces
from facecluster.engine.decode import decode_photo
from facecluster.engine.detector import Detection
from facecluster.engine.embedder import FaceEmbedder
from facecluster.ingest.sources import S3Options, read_uri
from facecluster.settings import Settings
from facecluster.store.documents import FaceDoc, face_payload
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import Vectors

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    library: str | None
    faces: int
    points: int
    missing_vectors: list[str] = field(default_factory=list)
    orphan_points: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def consistent(self) -> bool:
        return not self.missing_vectors and not self.orphan_points

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing_vectors"] = len(self.missing_vectors)
        out["orphan_points"] = len(self.orphan_points)
        out["consistent"] = self.consistent
        return out


def check_stores(meta: MetaStore, vectors: Vectors, library: str | None) -> CheckReport:
    """Faces without a vector, and vectors without a face, of one library or all."""
    face_ids = meta.face_ids(library)
    point_ids = vectors.ids(library)
    return CheckReport(
        library=library,
        faces=len(face_ids),
        points=len(point_ids),
        missing_vectors=sorted(face_ids - point_ids),
        orphan_points=sorted(point_ids - face_ids),
    )


def repair_stores(
    report: CheckReport, meta: MetaStore, vectors: Vectors, embedder: FaceEmbedder, settings: Settings
) -> CheckReport:
    """Delete orphan points; re-embed faces whose vector is missing from their stored landmarks."""
    vectors.delete(report.orphan_points)
    faces = meta.faces_by_id(report.missing_vectors)
    by_image: dict[tuple[str, str], list[FaceDoc]] = {}
    for doc in faces:
        by_image.setdefault((doc["library"], doc["image"]), []).append(doc)
    s3 = S3Options.from_settings(settings)
    for (library, key), docs in by_image.items():
        image = meta.images_by_key(library, [key]).get(key)
        if image is None:
            log.warning("face %s: its image %s is not recorded; removing the face", docs[0]["_id"], key)
            meta.delete_faces([d["_id"] for d in docs])
            continue
        pixels = decode_photo(read_uri(image["uri"], s3), settings.images).pixels
        detections = [_detection(doc) for doc in docs]
        crops = crop_faces(pixels, detections, embedder.size, embedder.alignment)
        embedded = embedder.embed(crops, batch_size=settings.detection.embed_batch_size)
        payloads = [face_payload(doc) for doc in docs]
        vectors.upsert([d["_id"] for d in docs], embedded, payloads)
    report.repaired = True
    return report


def _detection(doc: Mapping[str, Any]) -> Detection:
    x, y, w, h = doc["bbox"]
    box = np.array([x, y, x + w, y + h], np.float32)
    return Detection(box, float(doc["score"]), np.array(doc["landmarks"], np.float32))


def face_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored face as `export faces` and the API show it."""
    return {
        "face_id": doc["_id"],
        "image": doc["image"],
        "bbox": doc["bbox"],
        "score": doc["score"],
        "quality": doc["quality"]["score"],
        "cluster_id": doc.get("cluster_id"),
        "person_id": doc.get("person_id"),
    }


def export_faces(meta: MetaStore, library: str) -> Iterator[dict[str, Any]]:
    """One record per stored face of `library`."""
    for doc in meta.iter_faces(library):
        yield face_record(doc)
