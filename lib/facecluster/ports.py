"""Free loopback ports for the services facecluster starts (the Ray head's components, the MongoDB-wire
server, benchmarks' servers)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection


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
