"""The error hierarchy: every expected error answers with its own 4xx or 503 and message, never a 500."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi.testclient import TestClient

import facecluster
from facecluster.api import create_app
from facecluster.engine.analysis import ProfileRejected
from facecluster.engine.decode import ImageDecodeError
from facecluster.errors import FaceclusterError
from facecluster.settings import Settings

pytestmark = pytest.mark.fast


def _all_errors() -> list[type[FaceclusterError]]:
    for module in pkgutil.walk_packages(facecluster.__path__, "facecluster."):
        importlib.import_module(module.name)
    found: list[type[FaceclusterError]] = []
    pending: list[type[FaceclusterError]] = [FaceclusterError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_has_a_client_or_unavailable_status_and_an_exit_code() -> None:
    errors = _all_errors()
    assert len(errors) > 15  # the library's own errors all joined the hierarchy
    for cls in errors:
        assert cls.status in {400, 404, 409, 422, 503}, cls
        assert cls.exit_code == 2, cls


def test_the_api_answers_each_error_with_its_status_and_message() -> None:
    app = create_app(Settings(_env_file=None))
    raised: dict[str, FaceclusterError] = {}

    @app.get("/raise/{name}")
    def fail(name: str) -> None:
        raise raised[name]

    client = TestClient(app, raise_server_exceptions=False)
    special: dict[type, FaceclusterError] = {
        ProfileRejected: ProfileRejected("no face", {"faces": 0}),
        ImageDecodeError: ImageDecodeError("truncated", "the file ends early"),
    }
    for cls in _all_errors():
        error = special.get(cls) or cls(f"{cls.__name__} happened")
        raised[cls.__name__] = error
        answer = client.get(f"/raise/{cls.__name__}")
        assert answer.status_code == cls.status, cls
        assert answer.json()["detail"] == error.detail
    assert raised["ProfileRejected"].detail == {"message": "no face", "faces": 0}
