"""`facecluster bench serve`: concurrent clients posting 1-megapixel photos to the API on a local
Ray Serve (loopback only), for a bounded time: throughput, p50, p99 and errors per route."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from PIL import Image

from facecluster.deployment import scratch_data_dir
from facecluster.engine.decode import IMAGE_SUFFIXES
from facecluster.runtime import free_port
from facecluster.settings import Settings

ROUTES = ("/detect-face", "/api/v1/faces/search")


def megapixel_photos(folder: Path, count: int = 16) -> list[bytes]:
    """Up to `count` photos of `folder`, each rescaled to about one megapixel, as JPEG bytes."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ValueError(f"no photos in {folder}")
    out = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            scale = (1_000_000 / (rgb.width * rgb.height)) ** 0.5
            resized = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            resized.save(buffer, "JPEG", quality=90)
            out.append(buffer.getvalue())
    return out


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else 0.0


async def _load(base: str, photos: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {route: [] for route in ROUTES}
    statuses: dict[str, dict[int, int]] = {route: {} for route in ROUTES}
    errors: list[str] = []
    counter = itertools.count()
    run = uuid.uuid4().hex[:6]  # user ids of their own, so every /detect-face creates a profile
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        while time.monotonic() < deadline:
            index = next(counter)
            route = ROUTES[index % 2]
            form = aiohttp.FormData()
            if route == "/detect-face":
                form.add_field("user_id", f"bench-{run}-{number}-{index}")
            form.add_field("file", photos[index % len(photos)], filename="photo.jpg", content_type="image/jpeg")
            started = time.monotonic()
            try:
                async with session.post(base + route, data=form) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{route}: {exc!r}")
                continue
            latencies[route].append(time.monotonic() - started)
            statuses[route][status] = statuses[route].get(status, 0) + 1
            if status >= 500:
                errors.append(f"{route}: HTTP {status}")

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session, n) for n in range(clients)))
        elapsed = time.monotonic() - started
    every = [t for values in latencies.values() for t in values]
    return {
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed, 2),
        "p50_ms": _percentile(every, 50),
        "p99_ms": _percentile(every, 99),
        "errors": len(errors),
        "first_errors": errors[:5],
        "routes": {
            route: {
                "requests": len(latencies[route]),
                "p50_ms": _percentile(latencies[route], 50),
                "p99_ms": _percentile(latencies[route], 99),
                "statuses": {str(k): v for k, v in sorted(statuses[route].items())},
            }
            for route in ROUTES
        },
    }


def bench_serve(settings: Settings, images: Path, *, clients: int = 32, seconds: float = 60.0) -> dict[str, Any]:
    """Start the API on a free loopback port over a throw-away data directory, load it, stop it."""
    from ray import serve

    from facecluster.api.serving import run

    photos = megapixel_photos(images)
    port = free_port()
    with scratch_data_dir("facecluster-bench-") as data:
        current = settings.updated(data_dir=data)
        run(current, "127.0.0.1", port, blocking=False)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_load(base, photos[:2], 2, 3.0))  # warm-up: sessions loaded, first batches run
            report = asyncio.run(_load(base, photos, clients, seconds))
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
    return {
        "clients": clients,
        "seconds": seconds,
        "photo_pixels": "about 1 MP",
        "engine_batch_size": settings.serve.engine_batch_size,
        "engine_replicas": settings.serve.engine_replicas,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        **report,
    }
