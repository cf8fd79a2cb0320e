"""The embedded stores under the data directory: the MongoDB-wire server (nx-27017 on SQLite), started on
demand, and the folder of the Qdrant Edge shards."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from facecluster.runtime import free_port
from facecluster.settings import Settings

log = logging.getLogger(__name__)


def local_vectors_path(settings: Settings) -> str | None:
    """The folder of the embedded Qdrant Edge shards under the data directory; None when `QDRANT_URL` names a
    server."""
    return None if settings.stores.qdrant_url else str(settings.general.data_dir / "vectors")


def _port_file(folder: Path) -> Path:
    return folder / "nx.port"


def _answers(uri: str, timeout_ms: int = 1000) -> bool:
    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms) as client:
            client.admin.command("ping")
        return True
    except PyMongoError:
        return False


def _server_command() -> list[str]:
    found = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
    return [found]


def ensure_mongo(data_dir: Path, *, timeout: float = 30.0) -> str:
    """The URI of the embedded server for `data_dir`, starting it when it is not running."""
    folder = data_dir / "mongo"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; the others reuse its server
        port_file = _port_file(folder)
        if port_file.exists():
            uri = f"mongodb://127.0.0.1:{port_file.read_text().strip()}/"
            if _answers(uri):
                return uri
        port = free_port()
        command = [
            *_server_command(),
            "--host", "127.0.0.1",
            "-p", str(port),
            "--data-dir", str(folder),
            "--log-file", str(folder / "nx.log"),
            "--pid-file", str(folder / "nx-daemon.pid"),
        ]  # fmt: skip
        log.info("starting the embedded MongoDB-wire server on 127.0.0.1:%d (%s)", port, folder)
        server = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this process, like a daemon
        )
        uri = f"mongodb://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while not _answers(uri, 500):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded MongoDB-wire server did not start; see {folder / 'nx.log'}")
            time.sleep(0.2)
        (folder / "nx.pid").write_text(str(server.pid))
        port_file.write_text(str(port))
        return uri


def mongo_uri(settings: Settings) -> str:
    """The configured MongoDB (`MONGO_URI`), else the embedded server of the data directory."""
    return (
        settings.stores.mongo_uri.get_secret_value()
        if settings.stores.mongo_uri
        else ensure_mongo(settings.general.data_dir)
    )


def stop_mongo(data_dir: Path) -> bool:
    """Stop the embedded server of `data_dir`; False when none was running."""
    folder = data_dir / "mongo"
    pid_file = folder / "nx.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        return False
    finally:
        _port_file(folder).unlink(missing_ok=True)
    return True


def embedded_status(data_dir: Path) -> dict[str, object]:
    """Whether the embedded MongoDB-wire server of `data_dir` runs, and where."""
    folder = data_dir / "mongo"
    port_file, pid_file = _port_file(folder), folder / "nx.pid"
    if not port_file.exists():
        return {"running": False, "data_dir": str(folder)}
    uri = f"mongodb://127.0.0.1:{port_file.read_text().strip()}/"
    pid = pid_file.read_text().strip() if pid_file.exists() else None
    return {"running": _answers(uri), "uri": uri, "pid": pid, "data_dir": str(folder), "log": str(folder / "nx.log")}
