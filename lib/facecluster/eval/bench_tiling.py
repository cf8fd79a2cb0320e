"""`facecluster bench tiling`: faces found on the whole canvas against N x N overlapping tiles merged by
NMS, on the group photos at their own size and enlarged to 12 megapixels, through the ingest's working
copy (reduced decode, at most `align_max_side`): how many faces, recall on the annotated ones, and cost."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from facecluster.engine.faces import FaceEngine
from facecluster.eval.accuracy import box_iou, read_boxes
from facecluster.ingest.stages import working_copy
from facecluster.settings import Settings

#: The group photos with crowds of small faces.
CROWDS = ("deepface_selfie-many-people.jpg", "insightface_worlds-largest-selfie.jpg")


def _twelve_megapixels(data: bytes) -> tuple[bytes, float]:
    """The photo enlarged to 12 MP and saved as a quality-90 JPEG (as `make_12mp.py` does); its factor."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    factor = float((12e6 / (image.width * image.height)) ** 0.5)
    big = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=90)
    return out.getvalue(), factor


def bench_tiling(settings: Settings, photos: Path, tiles: list[int]) -> dict[str, Any]:
    """For each size (original, 12 MP) and tiling: faces kept, faces in the crowd photos, recall of the
    annotated faces (`face_boxes.csv`, IoU >= 0.4), and detection milliseconds per photo."""
    truth = read_boxes(photos / "group" / "face_boxes.csv")
    paths = sorted(p for p in (photos / "group").glob("*.jpg"))
    rows: list[dict[str, Any]] = []
    for size in ("original", "12 MP"):
        copies = []
        for path in paths:
            data, factor = path.read_bytes(), 1.0
            if size == "12 MP":
                data, factor = _twelve_megapixels(data)
            work, scale, _ = working_copy(data, settings)
            copies.append((f"group/{path.name}", work, factor * scale))
        for count in tiles:
            engine = FaceEngine.from_settings(settings.updated(detect_tiles=count))
            start = time.perf_counter()
            found = engine.detect([work for _, work, _ in copies])
            seconds = time.perf_counter() - start
            annotated = matched = 0
            for (name, _, scale), faces in zip(copies, found, strict=True):
                for box in truth.get(name, []):
                    annotated += 1
                    matched += max((box_iou(box * scale, f.detection.box) for f in faces), default=0.0) >= 0.4
            rows.append(
                {
                    "size": size,
                    "tiles": count,
                    "working_side": int(np.median([max(work.shape[:2]) for _, work, _ in copies])),
                    "faces": sum(len(faces) for faces in found),
                    "crowd_faces": sum(
                        len(f) for (n, _, _), f in zip(copies, found, strict=True) if n.endswith(CROWDS)
                    ),
                    "recall": round(matched / annotated, 4) if annotated else None,
                    "annotated": annotated,
                    "ms_per_photo": round(1000 * seconds / len(copies), 1),
                }
            )
    return {"photos": len(paths), "crowd_photos": list(CROWDS), "rows": rows}
