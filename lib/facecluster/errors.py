"""The errors facecluster raises on purpose, each with the HTTP status and the exit code users get.

The API answers any of them with its status and message (never a 500); the CLI logs the message and
exits with its code. An error outside this hierarchy is a bug.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FaceclusterError(Exception):
    """An expected failure with a message meant for the user."""

    status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__

    @property
    def detail(self) -> Any:
        """What the API's JSON `detail` holds: the message, or structured data where there is more to say."""
        return str(self)


class NotFound(FaceclusterError):
    """A face, person, cluster, profile, job, run or version that does not exist (here)."""

    status = 404


class Conflict(FaceclusterError):
    """A change that contradicts the current state (a duplicate, a lock held, an undo of changed faces)."""

    status = 409


class InvalidSettings(FaceclusterError):
    """Settings (environment variables, `.env`) that do not validate: each named with what is wrong."""


class InvalidInput(FaceclusterError):
    """Input that cannot be used: a photo, a source, a model file's contract."""

    status = 422


class Unavailable(FaceclusterError):
    """Something needed is not there right now: a backing service, a model file."""

    status = 503
