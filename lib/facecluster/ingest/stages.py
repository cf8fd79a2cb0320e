"""The ingest pipeline's stages as plain functions and classes over column batches.

Each stage takes and returns a dict of numpy columns, one row per image, so it runs the same in
a Ray Data pipeline (`facecluster.ingest.pipeline`) and in a plain loop or test. Per-image face arrays
(boxes, crops, vectors) are object columns holding one array per image.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from botocore.exceptions import BotoCoreError, ClientError
from numpy.typing import NDArray

from facecluster.engine.align import crop_faces
from facecluster.engine.decode import ImageDecodeError, decode_photo
from facecluster.engine.detector import Detection, FaceDetector, Letterbox, letterbox
from facecluster.engine.embedder import FaceEmbedder
from facecluster.engine.faces import (
    assess_faces,
    detect_batch_size,
    keep_faces,
    load_detector,
    load_embedder,
    quality_weights,
)
from facecluster.engine.quality import QUALITY_FIELDS
from facecluster.engine.registry import Alignment
from facecluster.ingest.relabel import Relabelling, carry_labels, is_erased
from facecluster.ingest.sources import S3Options, read_uri
from facecluster.settings import Settings
from facecluster.store.documents import FaceDoc, face_document, face_payload
from facecluster.store.meta import FINAL_STATES, MetaStore

if TYPE_CHECKING:  # the model actors import this module: Qdrant's client stays out of them
    from facecluster.store.vectors import Vectors

Batch = dict[str, NDArray[Any]]
NAMESPACE = uuid.UUID("5b1f7c1e-4d0a-4f5e-9a63-7c1d2f6e8a90")
_EMPTY_IMAGE = np.zeros((1, 1, 3), np.uint8)


def face_id(library: str, key: str, etag: str, index: int, detector: str) -> str:
    """Deterministic: the same face of the same image version and detector gets the same id."""
    return str(uuid.uuid5(NAMESPACE, f"face\n{library}\n{key}\n{etag}\n{index}\n{detector}"))


def image_id(library: str, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"image\n{library}\n{key}"))


@dataclass(frozen=True)
class IngestContext:
    """Everything a stage needs, shipped to every worker."""

    settings: Settings
    library: str
    job_id: str
    s3: S3Options
    mongo_uri: str
    detector_version: str
    embedder_version: str
    collection: str
    min_confidence: float
    canvas_size: int
    pad_value: int
    crop_size: int
    alignment: Alignment
    force: bool = False

    def open_meta(self) -> MetaStore:
        """This worker's own MongoDB connection, with the job's retries."""
        return MetaStore(self.mongo_uri, self.settings.stores.mongo_db, attempts=self.settings.stores.store_retries)


def _objects(values: list[Any]) -> NDArray[Any]:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def skip_done(batch: Batch, ctx: IngestContext, meta: MetaStore) -> Batch:
    """Drop images already stored with the same etag and models (all of them kept with --force)."""
    if ctx.force or not len(batch["key"]):
        return batch
    stored = meta.images_by_key(ctx.library, [str(k) for k in batch["key"]])
    keep = np.array(
        [
            not (
                (doc := stored.get(str(key))) is not None
                and doc.get("status") in FINAL_STATES
                and doc.get("etag") == str(etag)
                and doc.get("detector") == ctx.detector_version
                and doc.get("embedder") == ctx.embedder_version
            )
            for key, etag in zip(batch["key"], batch["etag"], strict=True)
        ],
        dtype=bool,
    )
    return {name: column[keep] for name, column in batch.items()}


def working_copy(data: bytes, settings: Settings) -> tuple[NDArray[np.uint8], float, tuple[int, int]]:
    """The photo as the faces are found and cropped in it: decoded reduced (JPEG) to at least
    `decode_min_side`, at most `align_max_side` on its longer side. Returns the pixels, their scale to
    the full-size photo and its width and height."""
    decoded = decode_photo(data, settings.images, min_side=settings.ingest.decode_min_side)
    work, scale = decoded.pixels, decoded.scale
    longest = max(work.shape[:2])
    if longest > settings.ingest.align_max_side:
        factor = settings.ingest.align_max_side / longest
        size = (round(work.shape[1] * factor), round(work.shape[0] * factor))
        work = np.asarray(cv2.resize(work, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        scale *= factor
    return work, scale, decoded.full_size


def _decode_one(uri: str, ctx: IngestContext) -> dict[str, Any]:
    failed = {"status": "error", "width": 0, "height": 0, "work_scale": 1.0, "work": _EMPTY_IMAGE}
    failed |= {"canvas": _EMPTY_IMAGE, "letterbox": (1.0, 0.0, 0.0)}
    try:
        work, scale, (width, height) = working_copy(read_uri(uri, ctx.s3), ctx.settings)
    except ImageDecodeError as exc:
        return failed | {"error_code": exc.code, "error": exc.reason}
    except (OSError, BotoCoreError, ClientError) as exc:
        return failed | {"error_code": "read_failed", "error": f"cannot read the file: {exc}"}
    box = letterbox(work, ctx.canvas_size, ctx.pad_value)
    return {
        "status": "ok",
        "error_code": "",
        "error": "",
        "width": width,
        "height": height,
        "work_scale": scale,
        "work": work,
        "canvas": box.canvas,
        "letterbox": (box.scale, box.pad_x, box.pad_y),
    }


def decode_batch(batch: Batch, ctx: IngestContext) -> Batch:
    """Read and decode each photo: a working copy (see `working_copy`) and its letterboxed canvas.

    A photo that cannot be read or decoded becomes an `error` row with the reason; the rest go on.
    """
    rows = [_decode_one(str(uri), ctx) for uri in batch["uri"]]
    return {
        "key": batch["key"],
        "uri": batch["uri"],
        "size": batch["size"],
        "etag": batch["etag"],
        "status": np.array([r["status"] for r in rows], dtype=object),
        "error_code": np.array([r["error_code"] for r in rows], dtype=object),
        "error": np.array([r["error"] for r in rows], dtype=object),
        "width": np.array([r["width"] for r in rows], dtype=np.int64),
        "height": np.array([r["height"] for r in rows], dtype=np.int64),
        "work_scale": np.array([r["work_scale"] for r in rows], dtype=np.float64),
        "work": _objects([r["work"] for r in rows]),
        "canvas": _objects([r["canvas"] for r in rows]),
        "letterbox": np.array([r["letterbox"] for r in rows], dtype=np.float64).reshape(-1, 3),
    }


def detect_batch(batch: Batch, detector: FaceDetector, ctx: IngestContext) -> Batch:
    """Face detection over the batch's letterboxed canvases, in model batches; the canvases stop here."""
    ok = [i for i, state in enumerate(batch["status"]) if state == "ok"]
    boxes = [
        Letterbox(
            batch["canvas"][i],
            float(batch["letterbox"][i][0]),
            float(batch["letterbox"][i][1]),
            float(batch["letterbox"][i][2]),
            int(batch["work"][i].shape[1]),
            int(batch["work"][i].shape[0]),
        )
        for i in ok
    ]
    batch_size = detect_batch_size(ctx.settings, detector)
    found = detector.detect_letterboxed(boxes, batch_size=batch_size)
    works = [batch["work"][i] for i in ok]
    found = detector.retry_weak(found, works, batch_size=batch_size)
    found = detector.add_tiles(found, works, tiles=ctx.settings.detection.detect_tiles, batch_size=batch_size)
    per_row: list[list[Detection]] = [[] for _ in batch["key"]]
    for i, faces in zip(ok, found, strict=True):
        per_row[i] = faces
    out = {k: v for k, v in batch.items() if k not in ("canvas", "letterbox")}
    out["det_boxes"] = _objects([np.array([f.box for f in faces], np.float32).reshape(-1, 4) for faces in per_row])
    out["det_scores"] = _objects([np.array([f.score for f in faces], np.float32) for faces in per_row])
    out["det_landmarks"] = _objects(
        [np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2) for faces in per_row]
    )
    return out


def align_batch(batch: Batch, ctx: IngestContext) -> Batch:
    """Faces above the thresholds: quality, and crops for the embedder; coordinates to the original.
    The working copies stop here."""
    weights = quality_weights(ctx.settings)
    boxes, landmarks, scores, qualities, crops, status = [], [], [], [], [], []
    for i, state in enumerate(batch["status"]):
        scale = float(batch["work_scale"][i])
        detections = [
            Detection(box, float(score), marks)
            for box, score, marks in zip(
                batch["det_boxes"][i], batch["det_scores"][i], batch["det_landmarks"][i], strict=True
            )
        ]
        kept = keep_faces(
            detections,
            min_confidence=ctx.min_confidence,
            min_face_size=ctx.settings.detection.min_face_size,
            scale=scale,
        )
        faces = assess_faces(batch["work"][i], kept, weights, scale=scale)
        boxes.append(np.array([d.box / scale for d in kept], np.float32).reshape(-1, 4))
        landmarks.append(np.array([d.landmarks / scale for d in kept], np.float32).reshape(-1, 5, 2))
        scores.append(np.array([d.score for d in kept], np.float32))
        quality_rows = [[getattr(f.quality, name) for name in QUALITY_FIELDS] for f in faces]
        qualities.append(np.array(quality_rows, np.float32).reshape(-1, len(QUALITY_FIELDS)))
        crops.append(crop_faces(batch["work"][i], kept, ctx.crop_size, ctx.alignment))
        status.append(state if state != "ok" else ("done" if kept else "no_face"))
    out = {k: v for k, v in batch.items() if not k.startswith("det_") and k != "work"}
    out.update(
        status=np.array(status, dtype=object),
        boxes=_objects(boxes),
        landmarks=_objects(landmarks),
        scores=_objects(scores),
        quality=_objects(qualities),
        crops=_objects(crops),
    )
    return out


def embed_batch(batch: Batch, embedder: FaceEmbedder, ctx: IngestContext) -> Batch:
    """Every face of every image of the batch in shared model runs; the crops stop here."""
    counts = [len(c) for c in batch["crops"]]
    crops = [c for c in batch["crops"] if len(c)]
    flat = np.concatenate(crops) if crops else np.zeros((0, embedder.size, embedder.size, 3), np.uint8)
    vectors = embedder.embed(flat, batch_size=ctx.settings.detection.embed_batch_size)
    splits = np.split(vectors, np.cumsum(counts)[:-1]) if counts else []
    out = {k: v for k, v in batch.items() if k != "crops"}
    out["vectors"] = _objects([np.asarray(part, np.float32).reshape(-1, embedder.dim) for part in splits])
    return out


class FaceStage:
    """A batch of listed photos through one model process: skip those already done, read and decode the
    rest, then detect, align, assess and embed their faces. Photos and crops never leave it (no copy of
    them crosses a stage boundary); what does is boxes, landmarks, qualities and vectors. Its threads
    share the MongoDB connection and the models."""

    def __init__(self, ctx: IngestContext) -> None:
        cv2.setNumThreads(1)  # the pool runs in parallel; OpenCV's own threads would only contend
        self.ctx = ctx
        self.meta = ctx.open_meta()
        self.detector = load_detector(ctx.settings)
        self.embedder = load_embedder(ctx.settings)

    def __call__(self, batch: Batch) -> Batch:
        detected = detect_batch(decode_batch(skip_done(batch, self.ctx, self.meta), self.ctx), self.detector, self.ctx)
        return embed_batch(align_batch(detected, self.ctx), self.embedder, self.ctx)


def write_batch(batch: Batch, ctx: IngestContext, meta: MetaStore, vectors: Vectors) -> Batch:
    """Store the batch: vectors first, then face metadata, then each image's final status.

    An image counts as done only once all its faces are in both stores, so a crash at any point
    leaves it to be redone by the next run. A photo read again passes its faces' labels to the new
    faces that overlap them (`relabel.carry_labels`); human work nothing overlaps stays. A photo that
    cannot be read this time keeps what was stored of it.
    """
    keys = [str(k) for k in batch["key"]]
    stored: dict[str, list[FaceDoc]] = {}
    for doc in meta.faces_of_images(ctx.library, keys):
        stored.setdefault(doc["image"], []).append(doc)
    erased = meta.tombstones(ctx.library, keys)
    now = dt.datetime.now(dt.UTC)
    ids: list[str] = []
    rows: list[NDArray[np.float32]] = []
    payloads: list[dict[str, Any]] = []
    face_docs: list[dict[str, Any]] = []
    image_docs: list[dict[str, Any]] = []
    stale: list[str] = []
    kept: list[str] = []
    for i, key in enumerate(keys):
        etag = str(batch["etag"][i])
        status = str(batch["status"][i])
        old = stored.get(key, [])
        found = len(batch["scores"][i]) if status == "done" else 0
        boxes = [_xywh(batch["boxes"][i][index]) for index in range(found)]
        chosen = [index for index in range(found) if not is_erased(boxes[index], erased.get(key, []))]
        count = len(chosen)
        # Nothing read: what was stored stays until a read says otherwise.
        unread = Relabelling([], kept=[f["_id"] for f in old])
        relabelled = unread if status == "error" else carry_labels(old, [boxes[index] for index in chosen])
        for position, index in enumerate(chosen):
            fid = face_id(ctx.library, key, etag, index, ctx.detector_version)
            quality = dict(zip(QUALITY_FIELDS, (round(float(v), 4) for v in batch["quality"][i][index]), strict=True))
            labels = relabelled.inherited[position] or {}
            face = face_document(
                face_id=fid,
                library=ctx.library,
                image=key,
                image_id=image_id(ctx.library, key),
                index=index,
                bbox=boxes[index],
                landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in batch["landmarks"][i][index]],
                score=round(float(batch["scores"][i][index]), 4),
                quality=quality,
                versions=(ctx.detector_version, ctx.embedder_version, ctx.collection),
                labels=labels,
                at=now,
            )
            ids.append(fid)
            rows.append(batch["vectors"][i][index])
            face_docs.append(face)
            payloads.append(face_payload(face))
        stale += relabelled.dropped
        kept += [] if status == "error" else relabelled.kept
        image_docs.append(
            {
                "_id": image_id(ctx.library, key),
                "library": ctx.library,
                "key": key,
                "uri": str(batch["uri"][i]),
                "etag": etag,
                "size": int(batch["size"][i]),
                "status": status,
                "error_code": str(batch["error_code"][i]) or None,
                "error": str(batch["error"][i]) or None,
                "faces": count + len(relabelled.kept),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
                "detector": ctx.detector_version,
                "embedder": ctx.embedder_version,
                "job_id": ctx.job_id,
                "updated_at": now,
            }
        )
    if ids:
        vectors.upsert(ids, np.stack(rows).astype(np.float32), payloads)
        meta.write_faces(face_docs)
    new = set(ids)
    gone = sorted({face for face in stale if face not in new})
    if gone:
        vectors.delete(gone)
        meta.delete_faces(gone)
    meta.mark_not_redetected(kept)
    meta.write_images(image_docs)
    return {
        "key": np.array(keys, dtype=object),
        "status": np.array([doc["status"] for doc in image_docs], dtype=object),
        "faces": np.array([doc["faces"] for doc in image_docs], dtype=np.int64),
    }


def _xywh(box: NDArray[np.floating]) -> list[float]:
    x1, y1, x2, y2 = (round(float(v), 2) for v in box)
    return [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]
