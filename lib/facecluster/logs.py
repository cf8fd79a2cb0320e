"""facecluster's log lines: on stderr, at FACECLUSTER_LOG_LEVEL, in the CLI and in the actors whose stderr
is their log in the dashboard (the vector store's owner reports a migration there)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


class Progress:
    """A long command's progress: the step it is in logged when it starts, and again every `interval_s`
    while it lasts (with a count where the step gives one), so no command is silent for longer; each
    step's seconds are kept for the command's summary. Each line goes to `report` where one is given (a
    job's, which also records it), else to the log."""

    def __init__(self, name: str, interval_s: float = 10.0, report: Callable[[str], None] | None = None) -> None:
        self.name, self.interval_s = name, interval_s
        self.report = report or logging.getLogger("facecluster.progress").info
        self.seconds: dict[str, float] = {}
        self._step, self._done, self._started = "", 0, time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"progress {name}", daemon=True)

    def step(self, step: str) -> None:
        """Start `step`, closing the one before."""
        now = time.monotonic()
        with self._lock:
            if self._step:
                self.seconds[self._step] = round(now - self._started, 3)
            self._step, self._done, self._started = step, 0, now
        if step:
            self.report(f"{self.name}: {step}")

    def advance(self, count: int) -> None:
        """`count` more items of the current step are done."""
        with self._lock:
            self._done += count

    def counted(self, items: Iterable[T]) -> Iterator[T]:
        """`items`, each one counted as done as it passes."""
        for item in items:
            self.advance(1)
            yield item

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                step, done, elapsed = self._step, self._done, time.monotonic() - self._started
            if step:
                self.report(f"{self.name}: {step}, {f'{done:,} done, ' if done else ''}{elapsed:.0f} s")

    def __enter__(self) -> Progress:
        self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.step("")
        self._stop.set()
        self._ticker.join()
