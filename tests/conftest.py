"""Shared fixtures: the real models and photos in ../shared, and a settings object pointing at them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from numpy.typing import NDArray

from facecluster.engine.decode import decode_image
from facecluster.engine.faces import FaceEngine
from facecluster.runtime import free_port, free_ports, head_command
from facecluster.settings import Settings

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def _need(path: Path) -> Path:
    """`path` under ../shared; a missing one fails the test under CI and skips it elsewhere."""
    if not path.exists():
        message = f"{path} is missing: the tests read real models and photos from ../shared"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _need(SHARED / "models")


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return _need(SHARED / "data" / "photos")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _need(SHARED / "data" / "lfw")


@pytest.fixture(scope="session")
def settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(models_dir=models_dir, data_dir=tmp_path_factory.mktemp("data"), _env_file=None)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> FaceEngine:
    return FaceEngine.from_settings(settings)


def load(path: Path) -> NDArray[np.uint8]:
    """A photo from disk as RGB pixels."""
    return decode_image(path.read_bytes(), max_bytes=10**9, max_pixels=10**9).pixels


os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # tests talk to their own loopback clusters only
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "120")  # a deadlock fails, not hangs
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # Ray Train's 2 s poll dominates short runs


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the whole session; never a cluster `ray start`ed on the machine."""
    import ray

    ray.init(
        address="local",
        num_cpus=4,  # logical: keeps actor pools from starving the read tasks on 2 cores
        include_dashboard=False,
        object_store_memory=512 * 1024**2,
        namespace="facecluster",
        log_to_driver=os.environ.get("TEST_RAY_LOGS") == "1",
    )
    yield
    ray.shutdown()


def stop_embedded(data_dir: Path) -> None:
    """What `facecluster stop` does: end the data directory's Ray head and MongoDB-wire server."""
    from facecluster.runtime import stop_embedded as stop

    stop(data_dir, grace_s=5)


@pytest.fixture
def store_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a fresh data directory: embedded MongoDB-wire server and local Qdrant of its own."""
    data = tmp_path / "data"
    yield settings.updated(data_dir=data, write_batch_size=4, progress_interval_s=0.5)
    stop_embedded(data)


def get_json(url: str, key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def facecluster_serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """`facecluster serve` on a free loopback port with `env`, until `/ready` says so; yields its base URL
    and stops it with SIGTERM."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "facecluster"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if get_json(f"{base}/ready")["ready"]:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API did not become ready"
            time.sleep(1)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


class RayHead(NamedTuple):
    dashboard: str  # the Job Submission API and dashboard, http://…
    gcs: str  # what RAY_ADDRESS takes


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    """`ray start --head --block` on free loopback ports, stopped by SIGTERM (never `ray stop`)."""
    dashboard, gcs = free_ports(2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    command = head_command(gcs, dashboard, cpus=4, object_store_bytes=512 * 1024**2)
    head = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
        time.sleep(0.5)
    yield RayHead(address, f"127.0.0.1:{gcs}")
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:  # its graceful stop takes about 30 s; the test is over
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
