"""facecluster's log lines: on stderr, at FACECLUSTER_LOG_LEVEL, in the CLI and in the actors whose stderr
is their log in the dashboard (the vector store's owner reports a migration there)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
