"""The API contract: every expected error answers with its own 4xx or 503 and message, never a 500, and the
OpenAPI spec shows every answer's shape."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

import facecluster
from facecluster.api import create_app
from facecluster.engine.analysis import ProfileRejected
from facecluster.engine.decode import ImageDecodeError
from facecluster.errors import FaceclusterError
from facecluster.settings import Settings

pytestmark = pytest.mark.fast
BIN = Path(sys.executable).parent


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

    client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
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


def test_every_operation_documents_its_answer_and_openapi_needs_no_store(tmp_path: Path) -> None:
    env = {**os.environ, "FACECLUSTER_DATA_DIR": str(tmp_path), "MONGO_URI": "mongodb://127.0.0.1:9/"}
    done = subprocess.run([str(BIN / "facecluster"), "openapi"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert not any(tmp_path.iterdir())  # neither the embedded MongoDB nor Qdrant was started
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert len(operations) > 40
    for path, method, op in operations:
        ok = next(code for code in op["responses"] if code.startswith("2"))
        content = op["responses"][ok]["content"]
        if "image/jpeg" in content:
            continue
        schema = content["application/json"]["schema"]
        assert schema.get("$ref") or schema.get("properties"), (method, path, schema)


def test_bodies_are_capped_while_they_stream_and_keys_are_checked_first() -> None:
    app = create_app(Settings(_env_file=None, max_upload_bytes=100_000, api_keys="ops:k3y"))
    ran: list[int] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        ran.append(len(await request.body()))
        return {"bytes": ran[-1]}

    def chunked(total: int) -> Iterator[bytes]:  # no Content-Length: the size shows only as it streams
        for _ in range(total // 65_536):
            yield b"x" * 65_536

    key = {"X-API-Key": "k3y"}
    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/echo", content=chunked(60_000_000)).status_code == 401  # before any byte is read
        refused = client.post("/echo", content=chunked(60_000_000), headers=key)
        assert refused.status_code == 413 and "limit of 100000 bytes" in refused.json()["detail"]
        assert ran == []  # the route never got the body
        form = {**key, "Content-Type": "multipart/form-data; boundary=b"}
        assert client.post("/detect-face", content=chunked(60_000_000), headers=form).status_code == 413
        assert client.post("/echo", content=b"x" * 5_000, headers=key).json() == {"bytes": 5_000}


def test_multipart_parts_are_counted_as_they_stream() -> None:
    app = create_app(Settings(_env_file=None, max_upload_parts=3, api_keys="ops:k3y"))
    ran: list[int] = []

    @app.post("/form")
    async def form(request: Request) -> dict[str, int]:
        ran.append(len(await request.form()))
        return {"parts": ran[-1]}

    def multipart(parts: int, boundary: bytes = b"XyZ") -> Iterator[bytes]:
        for index in range(parts):  # split so that delimiters straddle chunk borders
            part = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nvalue\r\n' % index
            yield part[:3]
            yield part[3:]
        yield b"--" + boundary + b"--\r\n"

    headers = {"X-API-Key": "k3y", "Content-Type": "multipart/form-data; boundary=XyZ"}
    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/form", content=multipart(3), headers=headers).json() == {"parts": 3}
        refused = client.post("/form", content=multipart(1000), headers=headers)
        assert refused.status_code == 413 and "at most 3 parts" in refused.json()["detail"]
        assert ran == [3]


def test_a_slow_request_is_answered_504_at_the_timeout() -> None:
    import asyncio

    app = create_app(Settings(_env_file=None, request_timeout_s=0.2))

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(5)
        return {"late": True}

    with TestClient(app, base_url="http://localhost") as client:
        answer = client.get("/slow")
        assert answer.status_code == 504 and "FACECLUSTER_REQUEST_TIMEOUT_S" in answer.json()["detail"]


def test_the_thumbnail_cache_keeps_to_its_budget() -> None:
    from facecluster.api.routes.review import ThumbnailCache

    cache = ThumbnailCache(budget=250)
    for index in range(5):
        cache.put(("face", index), bytes(100))
    assert cache.size <= 250 and cache.get(("face", 0)) is None and cache.get(("face", 4)) == bytes(100)
    cache.put(("huge",), bytes(1000))  # larger than the whole budget: not kept
    assert cache.get(("huge",)) is None
    cache.clear()
    assert cache.size == 0 and cache.get(("face", 4)) is None


def test_web_pages_cannot_change_anything_cross_site_nor_reach_it_by_another_name() -> None:
    app = create_app(Settings(_env_file=None, cors_origins="https://review.example.com"))

    @app.post("/change")
    def change() -> dict[str, bool]:
        return {"changed": True}

    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/change").json() == {"changed": True}  # curl and scripts send no Origin
        assert client.post("/change", headers={"Origin": "http://localhost"}).status_code == 200
        assert client.post("/change", headers={"Origin": "https://review.example.com"}).status_code == 200
        refused = client.post("/change", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403 and "cross-site request from https://evil.example" in refused.text
        assert client.post("/change", headers={"Origin": "null"}).status_code == 403
        form = client.post("/change", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
        assert client.post("/change", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert client.get("/health", headers={"Host": "rebound.evil.example"}).status_code == 400
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/health").status_code == 200
    opened = create_app(Settings(_env_file=None, serve_host="0.0.0.0", api_keys="ops:k"))
    with TestClient(opened, base_url="http://faces.example.com") as client:
        assert client.get("/health").status_code == 200  # bound to every address: any name
