"""Bounded retries with exponential backoff for calls to a backing service."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from facecluster.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class BackendUnavailable(Unavailable):
    """A backing service (Qdrant, MongoDB, S3) did not answer after every retry."""


def with_retries(
    call: Callable[[], T],
    *,
    backend: str,
    attempts: int,
    retry_on: tuple[type[BaseException], ...],
    base_delay: float = 0.5,
    max_delay: float = 8.0,
) -> T:
    """`call()`, retried on `retry_on` errors with delays 0.5 s, 1 s, 2 s, … then a clear error."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except retry_on as exc:
            if attempt == attempts:
                raise BackendUnavailable(f"{backend} is unreachable after {attempts} attempts: {exc}") from exc
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.1f s", backend, attempt, attempts, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
