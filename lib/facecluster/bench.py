"""Benchmarks: model speed by batch size and peak memory."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.engine import load_detector, load_embedder
from facecluster.imagedecode import IMAGE_SUFFIXES, decode_image
from facecluster.settings import Settings


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first-call allocations and graph set-up are not what we measure
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _load_images(settings: Settings, folder: Path | None, count: int) -> list[NDArray[np.uint8]]:
    if folder is None:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(count)]
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not files:
        raise ValueError(f"no images under {folder}")
    images = [
        decode_image(p.read_bytes(), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels).pixels
        for p in files
    ]
    return [images[i % len(images)] for i in range(count)]


def bench_engine(
    settings: Settings, *, images: Path | None, batch_sizes: list[int], repeats: int = 3
) -> dict[str, Any]:
    """Detector ms per image (model only and with letterbox) and embedder ms per face, per batch size."""
    detector = load_detector(settings)
    embedder = load_embedder(settings)
    photos = _load_images(settings, images, max(batch_sizes))
    boxes = [detector.letterbox(image) for image in photos]
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (max(batch_sizes), embedder.size, embedder.size, 3), dtype=np.uint8)
    rows = []
    for size in batch_sizes:
        model_only = _median_seconds(partial(detector.detect_letterboxed, boxes[:size], batch_size=size), repeats)
        end_to_end = _median_seconds(
            partial(detector.detect, photos[:size], batch_size=size, retry_padded=False), repeats
        )
        embed = _median_seconds(partial(embedder.embed, crops[:size], batch_size=size), repeats)
        rows.append(
            {
                "batch": size,
                "detector_ms_per_image": round(1000 * model_only / size, 2),
                "detector_end_to_end_ms_per_image": round(1000 * end_to_end / size, 2),
                "embedder_ms_per_face": round(1000 * embed / size, 3),
            }
        )
    return {
        "detector": detector.spec.name,
        "embedder": embedder.spec.name,
        "provider": detector.session.get_providers()[0],
        "images": str(images) if images else "synthetic 1280x720",
        "image_sizes": sorted({f"{p.shape[1]}x{p.shape[0]}" for p in photos}),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "rows": rows,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
