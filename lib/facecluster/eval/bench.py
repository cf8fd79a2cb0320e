"""Benchmarks: model speed by batch size and peak memory."""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import resource
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray

from facecluster.cluster.methods import Method
from facecluster.deployment import scratch_data_dir
from facecluster.engine.align import crop_faces
from facecluster.engine.decode import IMAGE_SUFFIXES, ImageDecodeError, decode_photo
from facecluster.engine.detector import Detection
from facecluster.engine.faces import load_detector, load_embedder
from facecluster.eval import INGEST_RUNS
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
    images = [decode_photo(p.read_bytes(), settings.images).pixels for p in files]
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


class PeakMemory:
    """Peak memory of this process and all its descendants (Ray workers, the embedded stores) as PSS:
    pages they share (libraries, the object store) are divided among them, not counted in each. Reading
    PSS walks each process's page tables (a third of a core at two samples a second while the pipeline
    runs), so a sample waits 20 times as long as the last one took: the measurement stays under 5 % of
    one core."""

    def __init__(self, interval: float = 0.5, *, ray_workers: bool = False) -> None:
        self.interval = interval
        self.ray_workers = ray_workers  # also every Ray worker on the machine (nodes started apart)
        self.peak = 0.0
        self.parts: dict[str, float] = {}  # MiB per process name at the peak
        self.largest_each: dict[str, float] = {}  # per process name, the most one such process held, MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        me = psutil.Process()
        found = {p.pid: p for p in [me, *me.children(recursive=True)]}
        if self.ray_workers:
            for process in psutil.process_iter(["name"]):
                if str(process.info["name"]).startswith("ray::"):
                    found.setdefault(process.pid, process)
        return list(found.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            parts: dict[str, float] = defaultdict(float)
            for process in self._processes():
                with contextlib.suppress(psutil.Error):
                    mib = process.memory_full_info().pss / 2**20
                    parts[process.name()] += mib
                    self.largest_each[process.name()] = round(max(mib, self.largest_each.get(process.name(), 0.0)), 1)
            if (total := sum(parts.values())) > self.peak:
                self.peak = total
                self.parts = {name: round(mib, 1) for name, mib in sorted(parts.items(), key=lambda p: -p[1])}
            self._stop.wait(max(self.interval, 20 * (time.perf_counter() - started)))

    @property
    def largest_name(self) -> str:
        """The kind of process that held the most at any sample ("" before any)."""
        return max(self.largest_each, key=self.largest_each.__getitem__, default="")

    @property
    def largest(self) -> float:
        """The most one process held at any sample, MiB."""
        return self.largest_each.get(self.largest_name, 0.0)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _rates(images: int, faces: int, seconds: float, peak_mib: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "faces_per_s": round(faces / seconds, 2),
        "peak_pss_mib": round(peak_mib, 1),
    }


#: The pipeline's runs and the runs it is compared with, by the names of their figures in the report.
PIPELINE_RUNS = {"c": "c_ray_pipeline", "cw": "cw_warm_head"}
BOUNDS = {"a": "a_model_only", "a2": "a2_decode_and_models", "b": "b_naive_loop"}


def bench_ingest(
    settings: Settings, source_spec: str, *, limit: int | None = None, runs: tuple[str, ...] = INGEST_RUNS
) -> dict[str, Any]:
    """(a) the models on working copies decoded beforehand, (a2) the same with reading and decoding
    timed (one process, batched, no stores), (b) a naive per-image, per-face loop as a plain script runs
    it (full-size decode), (c) the Ray pipeline end to end into throw-away embedded stores, its Ray
    start-up timed apart, and (cw) the pipeline once more on the Ray head (c) started (cw runs c too)."""
    from facecluster.deployment import init_ray
    from facecluster.engine.faces import FaceEngine, keep_faces
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.ingest.sources import S3Options, parse_source, read_uri
    from facecluster.ingest.stages import working_copy

    source = parse_source(source_spec)
    s3 = S3Options.from_settings(settings)
    items = list(itertools.islice(source.items(s3), limit))
    engine = FaceEngine.from_settings(settings)
    detector, embedder = engine.detector, engine.embedder
    batch = settings.ingest.read_batch_size  # photos per chunk, as the pipeline's model actors get them

    def faces_of(found: list[Detection], scale: float = 1.0) -> list[Detection]:
        size = settings.detection.min_face_size
        return keep_faces(found, min_confidence=engine.min_confidence, min_face_size=size, scale=scale)

    def working(uri: str) -> tuple[NDArray[np.uint8], float] | None:
        with contextlib.suppress(ImageDecodeError):
            work, scale, _ = working_copy(read_uri(uri, s3), settings)
            return work, scale
        return None

    def models(works: list[tuple[NDArray[np.uint8], float]]) -> int:
        """Detect, align and embed a chunk of working copies as the pipeline's model actor does."""
        found = detector.detect([w for w, _ in works], batch_size=engine.detect_batch_size)
        crops = [
            crop_faces(w, faces_of(f, scale), embedder.size, embedder.alignment)
            for (w, scale), f in zip(works, found, strict=True)
        ]
        flat = np.concatenate(crops)
        embedder.embed(flat, batch_size=settings.detection.embed_batch_size)
        return len(flat)

    report: dict[str, Any] = {
        "source": source_spec,
        "images": len(items),
        "photo_sizes": _photo_sizes([item.uri for item in items[:50]], s3),
        "provider": detector.session.get_providers()[0],
        "cpus": os.cpu_count(),
    }
    if "c" in runs or "cw" in runs:  # (c) The Ray pipeline, with store writes, into a throw-away data
        # directory; first, so that this process holds none of the other runs' photos while its memory is
        # measured. (cw) the same again on the Ray head (c) leaves running, into another library: what an
        # ingest costs on a running cluster, where Ray Data's and the stores' own actors are up.
        with scratch_data_dir("facecluster-bench-") as data_dir:
            scoped = settings.updated(data_dir=data_dir)
            start = time.perf_counter()
            init_ray(scoped)
            report["ray_start_s"] = round(time.perf_counter() - start, 2)
            for run, library in (("c", None), ("cw", "bench-warm-head")):
                if run == "c" or "cw" in runs:
                    with PeakMemory() as memory:
                        start = time.perf_counter()
                        summary = run_ingest(scoped, source_spec, library=library, limit=limit)
                        seconds = time.perf_counter() - start
                    rates = _rates(summary.images - summary.failed, summary.faces, seconds, memory.peak)
                    report[PIPELINE_RUNS[run]] = rates
        report["faces"] = summary.faces
    if "a" in runs:  # (a) Model-only bound: the working copies are decoded beforehand and not timed.
        works = [w for w in map(working, (item.uri for item in items)) if w is not None]
        with PeakMemory() as memory:
            start = time.perf_counter()
            faces = sum(models(works[first : first + batch]) for first in range(0, len(works), batch))
            report["a_model_only"] = _rates(len(works), faces, time.perf_counter() - start, memory.peak)
        del works
    if "a2" in runs:  # (a2) Decode-inclusive bound: read, reduced decode, detect, align, embed, batched.
        with PeakMemory() as memory:
            start = time.perf_counter()
            faces = done = 0
            for first in range(0, len(items), batch):
                chunk = [w for w in (working(item.uri) for item in items[first : first + batch]) if w is not None]
                faces += models(chunk) if chunk else 0
                done += len(chunk)
            report["a2_decode_and_models"] = _rates(done, faces, time.perf_counter() - start, memory.peak)
    if "b" in runs:  # (b) Naive loop: read, full decode, detect one photo, embed one face at a time.
        with PeakMemory() as memory:
            start = time.perf_counter()
            faces = done = 0
            for item in items:
                try:
                    image = decode_photo(read_uri(item.uri, s3), settings.images).pixels
                except ImageDecodeError:
                    continue
                done += 1
                for face in faces_of(detector.detect([image], batch_size=1)[0]):
                    embedder.embed(crop_faces(image, [face], embedder.size, embedder.alignment), batch_size=1)
                    faces += 1
            report["b_naive_loop"] = _rates(done, faces, time.perf_counter() - start, memory.peak)
    for (run, pipeline), (name, bound) in itertools.product(PIPELINE_RUNS.items(), BOUNDS.items()):
        if pipeline in report and bound in report:
            ratio = report[pipeline]["images_per_s"] / report[bound]["images_per_s"]
            report[f"{run}_over_{name}"] = round(ratio, 3)
    return report


def _photo_sizes(uris: list[str], s3: Any) -> dict[str, Any]:
    """Median width, height and megapixels of (up to 50 of) the photos, from their headers."""
    import io

    from PIL import Image

    from facecluster.ingest.sources import read_uri

    sizes = []
    for uri in uris:
        with contextlib.suppress(OSError), Image.open(io.BytesIO(read_uri(uri, s3))) as image:
            sizes.append(image.size)
    if not sizes:
        return {}
    width, height = (statistics.median(side) for side in zip(*sizes, strict=True))
    return {"width": width, "height": height, "megapixels": round(width * height / 1e6, 1), "sampled": len(sizes)}


def _cluster_once(vectors: NDArray[np.float32], method: Method, threshold: float, k: int) -> dict[str, Any]:
    """One timed clustering in a fresh process, so its peak memory is its own."""
    from facecluster.cluster.knn import EXACT_MAX, knn_graph, knn_rows
    from facecluster.cluster.methods import ClusterParams, cluster

    start = time.perf_counter()
    graph = knn_graph(vectors, k)
    knn_seconds = time.perf_counter() - start
    params = ClusterParams(method=method, threshold=threshold, merge_threshold=threshold, k=k)
    labels = cluster(vectors, [str(i) for i in range(len(vectors))], params, knn=graph)
    total = time.perf_counter() - start
    # Neighbour recall against the exact search on the first 3,000 rows, measured after the time and
    # the peak memory are read, so neither includes it.
    seconds, rss = round(total, 2), round(peak_rss_mib(), 1)
    sample = min(3000, len(vectors))
    exact, _ = knn_rows(vectors, slice(0, sample), k)
    recall = np.mean(
        [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(graph.indices[:sample], exact, strict=True)]
    )
    return {
        "faces": len(vectors),
        "search": "exact" if len(vectors) <= EXACT_MAX else "hnsw",
        "neighbour_recall": round(float(recall), 4),
        "seconds": seconds,
        "knn_seconds": round(knn_seconds, 2),
        "cluster_seconds": round(total - knn_seconds, 2),
        "clusters": int(labels.max(initial=-1) + 1),
        "peak_rss_mib": rss,
    }


def grow(
    base: NDArray[np.float32], size: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """`size` unit vectors: the real ones first, then noisy copies of random ones at cosine ~0.8 to their
    original, like further photos of the same person; and which real vector each one is."""
    sigma = np.sqrt((1 / 0.8**2 - 1) / base.shape[1])
    picks = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), max(0, size - len(base)))])[:size]
    grown = base[picks] + (np.arange(size) >= len(base))[:, None] * rng.normal(0, sigma, (size, base.shape[1]))
    return picks, (grown / np.linalg.norm(grown, axis=1, keepdims=True)).astype(np.float32)


def bench_cluster(
    settings: Settings, images: Path, sizes: list[int], *, method: Method | None = None
) -> dict[str, Any]:
    """Clustering time and memory at each size, on real embeddings grown with noisy copies."""
    import multiprocessing

    from facecluster.engine.faces import FaceEngine
    from facecluster.engine.registry import load_registry
    from facecluster.eval.verification import embed_central_faces

    engine = FaceEngine.from_settings(settings)
    spec = load_registry().embedder(settings.models.embedder)
    chosen = method or spec.unknown_method
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    found = embed_central_faces(engine, paths)
    base = np.stack([v for v in found.values() if v is not None]).astype(np.float32)
    rng = np.random.default_rng(0)
    rows = []
    context = multiprocessing.get_context("spawn")
    for size in sizes:
        _, grown = grow(base, size, rng)
        with context.Pool(1) as pool:
            rows.append(pool.apply(_cluster_once, (grown, chosen, spec.cluster_thresholds[chosen], 20)))
    return {
        "method": chosen,
        "real_embeddings": len(base),
        "growth": "sizes beyond the real embeddings are noisy copies of them (cosine ~0.8 to the original)",
        "cpus": os.cpu_count(),
        "rows": rows,
    }
