"""Accuracy harnesses: detection recall, enrolment photos, clustering methods, and training's gain."""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.deployment import scratch_data_dir
from facecluster.engine.decode import IMAGE_SUFFIXES, decode_photo
from facecluster.engine.faces import FaceEngine
from facecluster.engine.projection import unit
from facecluster.eval.metrics import ClusterScores, score_clustering, tar_at_far
from facecluster.settings import Settings
from facecluster.store.meta import MetaStore


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = w * h
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RecallReport:
    images: int
    annotated: int
    matched: int
    recall: float
    detections: int
    iou: float


def read_boxes(boxes_csv: Path) -> dict[str, list[NDArray[np.float64]]]:
    """`path,left,top,width,height[,…]` rows to (x1, y1, x2, y2) boxes per image path."""
    boxes: dict[str, list[NDArray[np.float64]]] = defaultdict(list)
    with boxes_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            left, top, width, height = (float(row[key]) for key in ("left", "top", "width", "height"))
            boxes[row["path"]].append(np.array([left, top, left + width, top + height]))
    return dict(boxes)


def detection_recall(engine: FaceEngine, images: Path, boxes_csv: Path, *, iou: float = 0.4) -> RecallReport:
    """Share of annotated faces that a reported detection overlaps by at least `iou`."""
    truth = read_boxes(boxes_csv)
    paths = sorted(truth)
    pixels = [decode_photo((images / p).read_bytes(), engine.settings.images).pixels for p in paths]
    found = engine.detect(pixels)
    matched = detections = 0
    for path, faces in zip(paths, found, strict=True):
        detections += len(faces)
        matched += sum(max((box_iou(t, f.detection.box) for f in faces), default=0.0) >= iou for t in truth[path])
    annotated = sum(len(boxes) for boxes in truth.values())
    return RecallReport(len(paths), annotated, matched, matched / annotated if annotated else 0.0, detections, iou)


@dataclass(frozen=True, slots=True)
class SeparationReport:
    people: int
    photos: int
    same_pairs: int
    different_pairs: int
    same_min: float
    different_max: float
    threshold: float
    separated: bool


def enrolment_separation(engine: FaceEngine, folder: Path) -> SeparationReport:
    """Cosine of the largest face of every photo in `folder/<person>/`, pairwise, against the
    embedder's calibrated verification threshold: do all same-person pairs score above it and all
    different-person pairs below?"""
    vectors: list[tuple[str, NDArray[np.float32]]] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = decode_photo(path.read_bytes(), engine.settings.images).pixels
        faces = engine.analyze([image])[0]
        if faces:
            largest = max(faces, key=lambda f: f.detection.size)
            assert largest.embedding is not None
            vectors.append((path.parent.name, largest.embedding))
    same: list[float] = []
    different: list[float] = []
    for (who_a, a), (who_b, b) in itertools.combinations(vectors, 2):
        (same if who_a == who_b else different).append(float(a @ b))
    threshold = engine.embedder.spec.verify_threshold
    same_min = min(same, default=float("nan"))
    different_max = max(different, default=float("nan"))
    return SeparationReport(
        people=len({who for who, _ in vectors}),
        photos=len(vectors),
        same_pairs=len(same),
        different_pairs=len(different),
        same_min=round(same_min, 4),
        different_max=round(different_max, 4),
        threshold=threshold,
        separated=bool(same and different and same_min > threshold > different_max),
    )


def report_dict(report: RecallReport | SeparationReport) -> dict[str, object]:
    return {key: round(value, 5) if isinstance(value, float) else value for key, value in asdict(report).items()}


CLUSTER_METHODS = ("dual", "graph", "hdbscan", "dbscan", "agglomerative")


def labelled_faces(meta: MetaStore, library: str) -> dict[str, str]:
    """LFW layout: the face nearest the centre of `Name/Name_NNNN.jpg` is Name's; others are left out."""
    images = {doc["key"]: doc for doc in meta.images(library, "done")}
    best: dict[str, tuple[float, str]] = {}
    for face in meta.faces_in(library, ["image", "bbox"]):
        image = images.get(face["image"])
        if image is None:
            continue
        x, y, w, h = face["bbox"]
        offset = float(np.hypot(x + w / 2 - image["width"] / 2, y + h / 2 - image["height"] / 2))
        if face["image"] not in best or offset < best[face["image"]][0]:
            best[face["image"]] = (offset, face["_id"])
    return {face_id: Path(key).parent.name for key, (_, face_id) in best.items()}


def evaluate_clustering(
    settings: Settings, images: Path, *, limit: int | None = None, methods: Sequence[str] = CLUSTER_METHODS
) -> Iterator[dict[str, Any]]:
    """Ingest `images` into a throw-away library, then run and score every method in turn."""
    from facecluster.cluster.commands import run_cluster
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.store.connection import open_meta

    with scratch_data_dir("facecluster-eval-") as scratch:
        scoped = settings.updated(data_dir=scratch)
        ingest = run_ingest(scoped, str(images), library="eval", limit=limit)
        meta = open_meta(scoped)
        truth = labelled_faces(meta, "eval")
        yield {"ingest": ingest.to_dict(), "labelled_faces": len(truth), "identities": len(set(truth.values()))}
        for method in methods:
            summary = run_cluster(scoped, "eval", method=method)
            run: Mapping[str, Any] = meta.run(summary.run_id) or {}
            scores = library_scores(meta, "eval", truth)
            yield {"method": method, "params": run.get("params"), "seconds": summary.seconds, **scores.to_dict()}


def library_scores(meta: MetaStore, library: str, truth: dict[str, str]) -> ClusterScores:
    """The library's current persons and clusters scored against `truth` (face id → identity)."""
    state = {
        f["_id"]: f.get("person_id") or f.get("cluster_id") for f in meta.faces_in(library, ["person_id", "cluster_id"])
    }
    names = sorted({str(state[f]) for f in truth if state.get(f)})
    code = {name: i for i, name in enumerate(names)}
    predicted = [code[str(state[f])] if state.get(f) else -1 for f in truth]
    return score_clustering(list(truth.values()), predicted)


def evaluate_training(
    settings: Settings,
    images: Path,
    *,
    min_images: int = 5,
    persons: int | None = None,
    epochs: int | None = None,
    margin: float | None = None,
    min_faces: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Split the persons with ≥ `min_images` photos in half (seeded): the first half is ingested and
    labelled by "a human" (each photo's central face), the other half is held out. The held-out
    persons are scored before and after `run_train`: TAR at FAR 0.1 % over every pair of their
    central faces, and the default clustering's pairwise and BCubed F."""
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.store.connection import connect
    from facecluster.train.job import run_train

    people = sorted(p.name for p in images.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= min_images)
    order = np.random.default_rng(0).permutation(len(people))[: persons or len(people)]
    chosen = [people[i] for i in order]
    halves = {"train": chosen[: len(chosen) // 2], "heldout": chosen[len(chosen) // 2 :]}
    with scratch_data_dir("facecluster-eval-train-") as scratch:
        scoped = settings.updated(data_dir=scratch, heads_dir=scratch / "heads")
        truth: dict[str, dict[str, str]] = {}
        for library, names in halves.items():
            folder = scratch / "photos" / library
            for name in names:
                (folder / name).mkdir(parents=True)
                for photo in sorted((images / name).glob("*.jpg")):
                    (folder / name / photo.name).symlink_to(photo.resolve())
            ingest = run_ingest(scoped, str(folder), library=library)
            stores = connect(scoped)
            truth[library] = labelled_faces(stores.meta, library)
            yield {"library": library, "persons": len(names), "ingest": ingest.to_dict()}
        stores.meta.update_faces(
            [(face, {"person_id": name, "label_source": "human"}) for face, name in truth["train"].items()]
        )
        before = _heldout_scores(scoped, truth["heldout"])
        trained = run_train(scoped, epochs=epochs, margin=margin, min_faces=min_faces, library="train")
        after = _heldout_scores(scoped, truth["heldout"])
        yield {"before": before, "after": after, "train": trained.to_dict()}


def _heldout_scores(settings: Settings, truth: dict[str, str]) -> dict[str, Any]:
    from facecluster.cluster.commands import run_cluster
    from facecluster.store.connection import connect

    stores = connect(settings)
    ids = list(truth)
    vectors = unit(stores.vectors.fetch(ids)).astype(np.float32)
    summary = run_cluster(settings, "heldout", stores=stores)
    scores = library_scores(stores.meta, "heldout", truth)
    return {
        "version": stores.version,
        "tar_at_far_0.1%": round(tar_at_far(vectors, list(truth.values()), 1e-3), 4),
        "clusters": summary.clusters,
        **scores.to_dict(),
    }
