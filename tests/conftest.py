"""Shared fixtures: the real models and photos in ../shared, and a settings object pointing at them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psutil
import pytest
from numpy.typing import NDArray

from facecluster.engine.decode import decode_image
from facecluster.engine.faces import FaceEngine
from facecluster.runtime import free_port, free_ports, head_command
from facecluster.settings import SECTIONS, Settings, variable_names

from .isolation import isolation_guard

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def isolate() -> Path:
    """Keep the suite off what the person running it has running. Every service a test needs is started
    on free ports under the run's own scratch folder (returned); every setting that names a store, a Ray
    cluster or the data directory is dropped from the environment, so the defaults point at that folder
    or at nothing; Ray's sessions live there too. The guard refuses, in this process and in every Python
    process the run starts, any read of the user's data directory and any use of a default port."""
    user_data_dirs = {Path.home() / ".local" / "share" / "facecluster"}
    if os.environ.get("FACECLUSTER_DATA_DIR"):
        user_data_dirs.add(Path(os.environ["FACECLUSTER_DATA_DIR"]).expanduser())
    user_ray = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    keep = {"FACECLUSTER_MODELS_DIR", "DEEPFACE_HOME", "FACECLUSTER_SHARED"}  # inputs the run reads, not services
    settings_variables = {
        name for section in SECTIONS.values() for info in section.model_fields.values() for name in variable_names(info)
    }
    ray_variables = {
        "RAY_ADDRESS",
        "RAY_JOB_ADDRESS",
        "RAY_API_SERVER_ADDRESS",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
    }
    for name in list(os.environ):
        if name in keep:
            continue
        if name in settings_variables | ray_variables or name.removesuffix("_FILE") in settings_variables:
            del os.environ[name]
    scratch = Path(tempfile.mkdtemp(prefix="fc-tests-"))
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(scratch)  # every tmp_path, so every test's data directory
    os.environ["RAY_TMPDIR"] = str(scratch)  # Ray's sessions and its record of the current cluster
    os.environ["FACECLUSTER_DATA_DIR"] = str(scratch / "data")
    os.environ["FACECLUSTER_EMBEDDED_DASHBOARD_PORT"] = "0"
    os.environ[isolation_guard.VARIABLE] = json.dumps(
        {
            "forbidden_dirs": sorted(str(path.resolve()) for path in {*user_data_dirs, user_ray}),
            "ports": list(isolation_guard.DEFAULT_PORTS),
            "log": str(scratch / "guard.log"),
        }
    )
    guard = str(Path(isolation_guard.__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [guard, os.environ.get("PYTHONPATH")]))
    isolation_guard.install()
    return scratch


SCRATCH = isolate()
GUARD_LOG = SCRATCH / "guard.log"


def guard_violations(start: int = 0) -> list[dict[str, Any]]:
    """What the guard refused since byte `start` of its log."""
    if not GUARD_LOG.exists():
        return []
    with GUARD_LOG.open() as log:
        log.seek(start)
        return [json.loads(line) for line in log if line.strip()]


@pytest.fixture(autouse=True)
def _guarded() -> Iterator[None]:
    """Fails a test that read the user's data directory or used a default port, in any of its processes."""
    start = GUARD_LOG.stat().st_size if GUARD_LOG.exists() else 0
    yield
    refused = guard_violations(start)
    if refused:
        pytest.fail(
            "the test reached the user's services or data: "
            + "; ".join(f"{v['what']} (pid {v['pid']}, {' '.join(v['argv'])})\n{v['stack']}" for v in refused[:3])
        )


def survivors() -> list[psutil.Process]:
    """Processes of this run (their command line or environment names its scratch folder), this one aside."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(SCRATCH) in " ".join(process.cmdline()) or str(SCRATCH) in process.environ().get("RAY_TMPDIR", ""):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run fails when the guard refused anything or a process it started outlives it (those are
    killed), and leaves its scratch folder behind only then."""
    import shutil

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    deadline = time.monotonic() + 30  # Ray's processes end a few seconds after their head
    while (left := survivors()) and time.monotonic() < deadline:
        time.sleep(1)
    problems = [f"the guard refused: {v['what']} (pid {v['pid']}, {' '.join(v['argv'])})" for v in guard_violations()]
    for process in left:
        with contextlib.suppress(psutil.Error):
            problems.append(f"a process of the run survived it: pid {process.pid}, {' '.join(process.cmdline())[:200]}")
            process.kill()
    if problems:
        if reporter is not None:
            for problem in problems:
                reporter.write_line(f"ISOLATION: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        shutil.rmtree(SCRATCH, ignore_errors=True)


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
    """One Ray head of the run's own for the whole session, this process its driver; never a cluster the
    machine already runs."""
    import ray

    with started_head() as head:
        ray.init(
            address=head.gcs,
            namespace="facecluster",
            log_to_driver=os.environ.get("TEST_RAY_LOGS") == "1",
        )
        yield
        ray.shutdown()


def stop_embedded(data_dir: Path) -> None:
    """What `facecluster stop` does: end the data directory's Ray head and MongoDB-wire server."""
    from facecluster.deployment import stop_embedded as stop

    stop(data_dir)


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


@contextmanager
def started_head(*, cpus: int = 4, **env_extra: str) -> Iterator[RayHead]:
    """`ray start --head --block` on free loopback ports (4 logical CPUs by default: keeps actor pools from
    starving the read tasks on 2 cores), `env_extra` in its environment, stopped by SIGTERM (never `ray stop`)."""
    dashboard, gcs = free_ports(2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env |= env_extra
    env.pop("RAY_ADDRESS", None)
    command = head_command(gcs, dashboard, cpus=cpus, object_store_bytes=512 * 1024**2)
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
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for Ray's token
                break
        except OSError:
            pass
        assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
        time.sleep(0.5)
    try:
        yield RayHead(address, f"127.0.0.1:{gcs}")
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its graceful stop takes about 30 s; the test is over
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


class Nodes(NamedTuple):
    head: RayHead
    workers: dict[str, subprocess.Popen[bytes]]  # each worker node's custom resource (`node_2`, …) → `ray start`

    def kill(self, resource: str) -> None:
        """Kill a worker node as a lost machine goes: its raylet and every process of it at once."""
        os.killpg(self.workers[resource].pid, signal.SIGKILL)


@contextmanager
def three_nodes() -> Iterator[Nodes]:
    """A Ray cluster of three nodes on this machine, one logical CPU each: a head (`started_head`) and two
    workers started with `ray start --address` on free ports (each with a resource that names it, `node_2`
    and `node_3`), each stopped by its process group."""
    from ray.util.state import list_nodes

    from facecluster.runtime import free_ports

    with started_head(cpus=1) as head:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env |= {"RAY_raylet_start_wait_time_s": "60"}
        env.pop("RAY_ADDRESS", None)
        workers: dict[str, subprocess.Popen[bytes]] = {}
        logs: list[Path] = []
        try:
            for joined in (2, 3):  # one at a time: two raylets registering at once on 2 cores time out
                agent, agent_grpc, runtime_env_agent, metrics = free_ports(4)
                command = [
                    str(BIN / "ray"), "start", "--address", head.gcs, "--block", "--disable-usage-stats",
                    "--num-cpus", "1", "--object-store-memory", str(256 * 1024**2),
                    "--resources", json.dumps({f"node_{joined}": 1}),
                    "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
                    "--runtime-env-agent-port", str(runtime_env_agent), "--metrics-export-port", str(metrics),
                ]  # fmt: skip
                log = tempfile.NamedTemporaryFile(prefix="ray-worker-", suffix=".log", delete=False)  # noqa: SIM115
                logs.append(Path(log.name))
                workers[f"node_{joined}"] = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                deadline = time.monotonic() + 120
                while len(list_nodes(address=head.dashboard, filters=[("state", "=", "ALIVE")])) < joined:
                    said = "".join(path.read_text()[-2000:] for path in logs)
                    assert all(w.poll() is None for w in workers.values()) and time.monotonic() < deadline, said
                    time.sleep(1)
            yield Nodes(head, workers)
        finally:
            for worker in workers.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGTERM)
            for path in logs:
                path.unlink(missing_ok=True)
            for worker in workers.values():
                try:
                    worker.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=30)


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    """A Ray head of the test's own (`started_head`)."""
    with started_head() as head:
        yield head
