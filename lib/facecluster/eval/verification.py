"""Face verification on LFW-style pairs, with thresholds chosen by cross-validation."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from facecluster.engine.align import crop_faces
from facecluster.engine.decode import ImageDecodeError, decode_photo
from facecluster.engine.detector import Detection
from facecluster.engine.faces import FaceEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pair:
    first: Path
    second: Path
    same: bool


@dataclass(frozen=True, slots=True)
class VerifyReport:
    accuracy: float
    std: float
    threshold: float
    pairs: int
    no_face: int
    folds: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": round(self.accuracy, 5),
            "std": round(self.std, 5),
            "threshold": round(self.threshold, 4),
            "pairs": self.pairs,
            "no_face": self.no_face,
        }


def lfw_image(images: Path, name: str, number: str) -> Path:
    return images / name / f"{name}_{int(number):04d}.jpg"


def read_pairs(pairs_file: Path, images: Path) -> tuple[list[Pair], list[int]]:
    """Pairs and the fold of each: LFW `pairs*.txt`, with or without the header line.

    A header "<folds> <n>" (View 2) fixes the folds by file order, n matched then n mismatched
    pairs per fold; otherwise (a "<n>" header, or none) matched and mismatched pairs are dealt
    round-robin into 10 folds.
    """
    lines = [line.split() for line in pairs_file.read_text("utf-8").splitlines() if line.strip()]
    header: list[int] = []
    if lines and all(part.isdigit() for part in lines[0]):
        header = [int(part) for part in lines[0]]
        lines = lines[1:]
    pairs = []
    for number, parts in enumerate(lines, start=2 if header else 1):
        if len(parts) == 3:
            pairs.append(Pair(lfw_image(images, parts[0], parts[1]), lfw_image(images, parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append(Pair(lfw_image(images, parts[0], parts[1]), lfw_image(images, parts[2], parts[3]), False))
        else:
            raise ValueError(f"{pairs_file}:{number}: expected 3 or 4 fields, found {len(parts)}")
    if len(header) == 2:
        folds, per_fold = header
        if len(pairs) != folds * per_fold * 2:
            raise ValueError(f"{pairs_file}: header promises {folds}x{per_fold}x2 pairs, found {len(pairs)}")
        return pairs, [i // (2 * per_fold) for i in range(len(pairs))]
    fold_of: list[int] = []
    counters = {True: 0, False: 0}
    for pair in pairs:
        fold_of.append(counters[pair.same] % 10)
        counters[pair.same] += 1
    return pairs, fold_of


def central_face(faces: Sequence[Detection], width: int, height: int) -> Detection | None:
    """The face whose box centre is nearest the image centre: the labelled one in LFW."""
    if not faces:
        return None
    centre = np.array([width / 2.0, height / 2.0])
    return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2.0 - centre)))


def embed_central_faces(
    engine: FaceEngine, paths: Iterable[Path], *, chunk: int = 64
) -> dict[Path, NDArray[np.float32] | None]:
    """The vector of the most central face of each image; None where no face was found."""
    vectors: dict[Path, NDArray[np.float32] | None] = {}
    todo = list(dict.fromkeys(paths))
    said = time.monotonic()
    for start in range(0, len(todo), chunk):
        if time.monotonic() - said >= 10:
            log.info("progress: %d of %d photos embedded", start, len(todo))
            said = time.monotonic()
        batch_paths = todo[start : start + chunk]
        images, kept = [], []
        for path in batch_paths:
            try:
                decoded = decode_photo(path.read_bytes(), engine.settings.images)
            except (OSError, ImageDecodeError) as exc:
                log.warning("%s: %s", path, exc)
                vectors[path] = None
                continue
            images.append(decoded.pixels)
            kept.append(path)
        found = engine.detector.detect(images, batch_size=engine.detect_batch_size)
        crops, owners = [], []
        for path, image, faces in zip(kept, images, found, strict=True):
            face = central_face(faces, image.shape[1], image.shape[0])
            vectors[path] = None
            if face is not None:
                crops.append(crop_faces(image, [face], engine.embedder.size, engine.embedder.alignment))
                owners.append(path)
        if crops:
            embedded = engine.embedder.embed(
                np.concatenate(crops), batch_size=engine.settings.detection.embed_batch_size
            )
            for path, vector in zip(owners, embedded, strict=True):
                vectors[path] = vector
    return vectors


def best_threshold(similarities: NDArray[np.float64], same: NDArray[np.bool_]) -> float:
    """The threshold (similarity > t means same) with the highest accuracy on these pairs."""
    order = np.argsort(similarities, kind="stable")
    sims, labels = similarities[order], same[order]
    # Threshold just below sims[i]: pairs i.. are called same. Correct = different below + same at/above.
    different_below = np.concatenate([[0], np.cumsum(~labels)])
    same_at_or_above = np.concatenate([np.cumsum(labels[::-1])[::-1], [0]])
    correct = different_below + same_at_or_above
    best = int(np.argmax(correct))
    if best == 0:
        return float(sims[0]) - 1e-6
    if best == len(sims):
        return float(sims[-1])
    return float((sims[best - 1] + sims[best]) / 2.0)


def cross_validate(similarities: NDArray[np.float64], same: NDArray[np.bool_], folds: NDArray[np.int_]) -> VerifyReport:
    """Accuracy on each fold with the threshold chosen on the other folds."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_threshold(similarities[~test], same[~test])
        accuracies.append(float(np.mean((similarities[test] > threshold) == same[test])))
        thresholds.append(threshold)
    return VerifyReport(
        accuracy=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        threshold=float(np.mean(thresholds)),
        pairs=len(similarities),
        no_face=0,
        folds=len(accuracies),
    )


def verify(engine: FaceEngine, images: Path, pairs_file: Path) -> VerifyReport:
    """Run the engine over every image of the pairs and cross-validate the cosine threshold."""
    pairs, fold_of = read_pairs(pairs_file, images)
    vectors = embed_central_faces(engine, [p for pair in pairs for p in (pair.first, pair.second)])
    similarities = np.empty(len(pairs), dtype=np.float64)
    for i, pair in enumerate(pairs):
        a, b = vectors[pair.first], vectors[pair.second]
        similarities[i] = -1.0 if a is None or b is None else float(a @ b)  # a miss counts as "different"
    report = cross_validate(similarities, np.array([p.same for p in pairs]), np.array(fold_of))
    no_face = sum(vector is None for vector in vectors.values())
    return VerifyReport(report.accuracy, report.std, report.threshold, report.pairs, no_face, report.folds)
