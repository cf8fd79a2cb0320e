"""The data directory's own Ray head: started by whichever command needs it first and shared by every later
one (the API, the CLI, jobs), found, stopped; the token of a Ray that asks for one; and free loopback ports for
the services facecluster starts (the head's components, the MongoDB-wire server, benchmarks' servers)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from facecluster.settings import Settings

log = logging.getLogger(__name__)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int, taken: Collection[int] = ()) -> list[int]:
    """`count` different ports free on loopback, none of them in `taken`. The sockets are held open until
    all are chosen: a port just closed may be handed out again, and a Ray head given one port for two of
    its components does not start."""
    with contextlib.ExitStack() as sockets:
        ports: list[int] = []
        while len(ports) < count:
            sock = sockets.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                ports.append(port)
        return ports


@dataclass(frozen=True)
class Head:
    """A running Ray head of a data directory: what `ray.init` takes, its dashboard, its process, and the
    digest of the worker environment it was started with."""

    gcs: str
    dashboard: str
    pid: int
    worker_env_digest: str = ""


def env_digest(env: dict[str, str]) -> str:
    """A digest of a worker environment (no secrets are in one), to tell whether a head was started with it."""
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


def head_folder(data_dir: Path) -> Path:
    return data_dir / "ray"


def head_token_path(data_dir: Path) -> Path:
    """Where the data directory's head keeps Ray's token (this user only)."""
    return head_folder(data_dir) / "auth_token"


def ray_auth_token() -> str | None:
    """Ray's authentication token where Ray documents it: `RAY_AUTH_TOKEN`, the file `RAY_AUTH_TOKEN_PATH`
    names, or `~/.ray/auth_token`."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else Path.home() / ".ray" / "auth_token"
    return path.read_text().strip() if path.is_file() else None


def head_auth(data_dir: Path) -> dict[str, str]:
    """Ray's token authentication for the data directory's head: every process that starts or attaches to
    it reads the token from a file there (this user only); the GCS and dashboard refuse anyone without it."""
    token = head_token_path(data_dir)
    if not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def head_command(gcs_port: int, dashboard_port: int, cpus: int, object_store_bytes: int | None = None) -> list[str]:
    """`ray start --head --block` with its dashboard on loopback: the given GCS and dashboard ports, free
    ports for the agents (their defaults clash with any other Ray on the machine)."""
    ray_script = Path(sys.executable).with_name("ray")
    agent, agent_grpc, runtime_env_agent, metrics = free_ports(4, taken={gcs_port, dashboard_port})
    command = [
        str(ray_script), "start", "--head", "--block", "--disable-usage-stats",
        "--port", str(gcs_port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--num-cpus", str(cpus),
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env_agent), "--metrics-export-port", str(metrics),
    ]  # fmt: skip
    if object_store_bytes:
        command += ["--object-store-memory", str(object_store_bytes)]
    return command


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_head(data_dir: Path) -> Head | None:
    """The data directory's Ray head when it runs and answers."""
    record = head_folder(data_dir) / "head.json"
    if not record.exists():
        return None
    head = Head(**json.loads(record.read_text()))
    return head if _alive(head.pid) and _answers(head.gcs) else None


def ensure_head(settings: Settings, env: dict[str, str], *, timeout: float = 120.0) -> tuple[Head, bool]:
    """The data directory's Ray head, started (detached; dashboard on loopback, every connection needing
    the data directory's token; `env`, the worker environment, in its environment) when none runs; and
    whether this call started it."""
    folder = head_folder(settings.general.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others attach to its head
        head = running_head(settings.general.data_dir)
        if head is not None:
            return head, False
        preferred = settings.general.embedded_dashboard_port
        gcs, other = free_ports(2, taken={preferred})
        dashboard = preferred if preferred and _free(preferred) else other
        cpus = settings.general.embedded_ray_cpus or max(4, os.cpu_count() or 1)
        inherited = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        head_env = inherited | env | head_auth(settings.general.data_dir)
        head_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{head_env.get('PATH', '')}"
        # Its work runs in actors (model actors, writers, Serve replicas, trainers), which get processes of
        # their own: idle workers started ahead for each job only take CPU and memory from them.
        head_env = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"} | head_env
        log.info("starting the Ray of %s on 127.0.0.1:%d (dashboard :%d)", settings.general.data_dir, gcs, dashboard)
        with (folder / "head.log").open("ab") as out:
            process = subprocess.Popen(
                head_command(gcs, dashboard, cpus),
                env=head_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # outlives this command; `facecluster stop` ends it
            )
        head = Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", process.pid, env_digest(env))
        deadline = time.monotonic() + timeout
        while not _answers(head.gcs):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Ray did not start; see {folder / 'head.log'}")
            time.sleep(0.2)
        (folder / "head.json").write_text(json.dumps(asdict(head)))
        return head, True


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_head(data_dir: Path, *, grace_s: float = 3.0) -> bool:
    """Stop the data directory's Ray head and every process under it (its actors: the vector store's owner,
    which holds the shards), asked for `grace_s`, then killed (Ray's workers take longer than that to
    heed SIGTERM; the shards' write-ahead log keeps every acknowledged write). False when none ran; when it
    returns none of them runs."""
    record = head_folder(data_dir) / "head.json"
    if not record.exists():
        return False
    head = Head(**json.loads(record.read_text()))
    record.unlink()
    if not _alive(head.pid):
        return False
    family = head_processes(head.pid)  # Ray's workers and actors too: they outlive their raylet by seconds
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    if alive := _until_gone(family, time.monotonic() + grace_s):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _until_gone(alive, time.monotonic() + 5)  # the storage they held is free when this returns
    return True


def head_processes(pid: int) -> list[psutil.Process]:
    """The Ray head's process and every process under it."""
    try:
        head = psutil.Process(pid)
        return [head, *head.children(recursive=True)]
    except psutil.Error:
        return []


def running(process: psutil.Process) -> bool:
    """Still running: a zombie (exited, its parent has not reaped it) is not."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _until_gone(processes: list[psutil.Process], deadline: float) -> list[psutil.Process]:
    """Wait until none of `processes` runs or the deadline passes; those still running."""
    while (alive := [p for p in processes if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def head_status(data_dir: Path) -> dict[str, object]:
    """Whether the data directory's Ray head runs, and where."""
    head = running_head(data_dir)
    if head is None:
        return {"running": False}
    return {"running": True, **asdict(head), "log": str(head_folder(data_dir) / "head.log")}
