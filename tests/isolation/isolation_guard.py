"""The suite's guard: no process of the test run reads the data directory of the person running it, or
connects to or binds a port that their services take by default. Installed as an audit hook in the pytest
process by conftest and in every Python process it starts through `sitecustomize` (this folder is on their
PYTHONPATH); each violation is refused and written to the run's log, which fails the test that made it."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

#: What the guard's configuration travels in, to every process of the run.
VARIABLE = "FACECLUSTER_TEST_GUARD"

#: Ports services take by default: Ray's GCS, client server, dashboard and dashboard agent; Serve and
#: `facecluster serve`; MongoDB; Qdrant's HTTP and gRPC.
DEFAULT_PORTS = (6379, 10001, 8265, 52365, 8000, 27017, 6333, 6334)

_READS = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "shutil.rmtree"}


def install() -> None:
    """Refuse and record, in this process, what the configuration in `FACECLUSTER_TEST_GUARD` forbids."""
    config = json.loads(os.environ[VARIABLE])
    roots = tuple(config["forbidden_dirs"])
    prefixes = tuple(root.rstrip(os.sep) + os.sep for root in roots)
    ports = frozenset(config["ports"])
    log_path = config["log"]

    def record(what: str) -> None:
        stack = "".join(traceback.format_stack(limit=12)[:-2])
        line = json.dumps({"pid": os.getpid(), "argv": sys.argv[:4], "what": what, "stack": stack})
        with open(log_path, "a") as log:
            log.write(line + "\n")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in ("socket.connect", "socket.bind"):
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2 and address[1] in ports:
                verb = "connect to" if event == "socket.connect" else "bind"
                record(f"{verb} {address[0]}:{address[1]}, a default port")
                raise ConnectionRefusedError(f"the test guard refuses to {verb} port {address[1]}: a default port")
        elif event in _READS and args and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path in roots or path.startswith(prefixes):
                record(f"{event} {path}, the user's data directory")
                raise PermissionError(f"the test guard refuses {event} of {path}: the user's data directory")

    sys.addaudithook(hook)
