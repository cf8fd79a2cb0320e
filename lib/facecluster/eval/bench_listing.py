"""`facecluster bench listing`: the ingest driver's memory while an S3 prefix is listed into the pipeline,
against the same keys read from a manifest, at two bucket sizes (flat in the number of keys, or not)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from facecluster.deployment import init_ray, scratch_data_dir
from facecluster.runtime import free_port
from facecluster.settings import Settings

BUCKET = "listing-bench"


@contextlib.contextmanager
def _moto_server() -> Iterator[str]:
    """moto's S3 in a process of its own (its objects must not count as the driver's memory)."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _count(source: str, s3: Any) -> int:
    """Rows of the source's dataset, as the ingest's stages would receive them."""
    from facecluster.ingest.pipeline import source_dataset
    from facecluster.ingest.sources import parse_source

    return int(source_dataset(parse_source(source), s3, None)[0].count())


def _fill(client: Any, start: int, stop: int) -> list[str]:
    """Keys `start` to `stop` written to the bucket (one byte each); their URIs."""
    names = [f"photos/{index // 1000:03d}/img_{index:07d}.jpg" for index in range(start, stop)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: client.put_object(Bucket=BUCKET, Key=name, Body=b"x"), names))
    return [f"s3://{BUCKET}/{name}" for name in names]


def _driver_peak(run: Callable[[], int]) -> dict[str, float]:
    """Run `run()` in this process: the peak of Python's heap (tracemalloc) and of RSS above the start."""
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    sampler.start()
    start = time.perf_counter()
    try:
        rows = run()
    finally:
        seconds = time.perf_counter() - start
        heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        done.set()
        sampler.join()
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "python_heap_peak_mib": round(heap / 2**20, 2),
        "rss_growth_mib": round((peak[0] - base) / 2**20, 1),
    }


def bench_listing(settings: Settings, sizes: list[int]) -> dict[str, Any]:
    """For each bucket size: fill moto with that many keys, then list them into a dataset and count its
    rows (as the ingest does before its stages), and the same from a .txt manifest of the keys."""
    from facecluster.ingest.sources import S3Options, s3_client

    rows: list[dict[str, Any]] = []
    with scratch_data_dir("facecluster-listing-") as scratch_dir, _moto_server() as endpoint:
        current = settings.updated(
            data_dir=scratch_dir, s3_endpoint_url=endpoint, s3_access_key="bench", s3_secret_key="bench"
        )
        s3 = S3Options.from_settings(current)
        client = s3_client(s3)
        client.create_bucket(Bucket=BUCKET)
        init_ray(current)
        filled = _fill(client, 0, 10)
        warm = scratch_dir / "warm-up.txt"
        warm.write_text("\n".join(filled) + "\n")
        _count(str(warm), s3)  # Ray Data's first dataset loads its modules: not the keys' memory
        _count(f"s3://{BUCKET}/photos/", s3)
        for size in sorted(sizes):
            filled += _fill(client, len(filled), size)
            manifest = scratch_dir / f"manifest-{size}.txt"
            manifest.write_text("\n".join(filled) + "\n")
            rows.append(
                {
                    "keys": size,
                    "s3_listing": _driver_peak(lambda: _count(f"s3://{BUCKET}/photos/", s3)),
                    "manifest": _driver_peak(lambda m=manifest: _count(str(m), s3)),  # type: ignore[misc]
                }
            )
    return {"endpoint": "moto server (separate process)", "rows": rows}
