"""The HTTP API (FastAPI); `facecluster.api.serving` runs it on Ray Serve."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facecluster.api.audit import AuditTrail
from facecluster.api.routes import assignments, data, faces, library, profiles, review, system
from facecluster.api.security import CrossSiteGuard, KeyGuard, allowed_hosts
from facecluster.api.services import Services
from facecluster.errors import FaceclusterError
from facecluster.settings import Settings


class UploadLimit:
    """Refuse a request body larger than the upload limit (413): at once when Content-Length says so, and
    while it streams otherwise (chunked uploads), counted as it is received, so it is never held whole.
    Multipart bodies are also refused past `max_parts` parts, counted by their boundaries as they stream."""

    def __init__(self, app: ASGIApp, limit: int, max_parts: int) -> None:
        self.app = app
        self.limit = limit + 64 * 1024  # room for the multipart envelope around a file of the limit
        self.max_parts = max_parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request is larger than the limit of {self.limit - 64 * 1024} bytes"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": message}, 413)(scope, receive, send)
            return
        parts = PartCounter.of(headers.get(b"content-type", b""), self.max_parts)
        received = 0

        async def counted() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                chunk = event.get("body", b"")
                received += len(chunk)
                if received > self.limit:
                    raise HTTPException(413, message)  # the route's body parsing passes it on as it is
                if parts is not None and parts.feed(chunk) > self.max_parts:
                    raise HTTPException(413, f"a multipart request may have at most {self.max_parts} parts")
            return event

        await self.app(scope, counted, send)


class PartCounter:
    """Parts of a multipart body seen so far, from its boundary lines, across chunk borders."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"--" + boundary
        self.tail = b""
        self.delimiters = 0

    @classmethod
    def of(cls, content_type: bytes, max_parts: int) -> PartCounter | None:
        kind, _, params = content_type.partition(b";")
        if kind.strip().lower() != b"multipart/form-data":
            return None
        for param in params.split(b";"):
            name, _, value = param.strip().partition(b"=")
            if name.lower() == b"boundary" and value:
                return cls(value.strip(b'"'))
        return None

    def feed(self, chunk: bytes) -> int:
        """Parts begun so far, less one: a body of N parts has N + 1 delimiters, the last closing it,
        so this exceeds N only once an (N + 1)th part has begun."""
        data = self.tail + chunk
        self.delimiters += data.count(self.delimiter)
        self.tail = data[-(len(self.delimiter) - 1) :]  # a delimiter split across chunks is found next time
        return self.delimiters - 1


class RequestTimeout:
    """Answer 504 when a request takes longer than `seconds` (nothing is sent twice: a response already
    under way is cut instead)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, sending), self.seconds)
        except TimeoutError:
            if not started:
                detail = f"the request took longer than {self.seconds:g} s (FACECLUSTER_REQUEST_TIMEOUT_S)"
                await JSONResponse({"detail": detail}, 504)(scope, receive, send)


async def _answer(_: Request, exc: Exception) -> JSONResponse:
    """Any expected error as its status and message."""
    assert isinstance(exc, FaceclusterError)
    return JSONResponse({"detail": exc.detail}, exc.status)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API; `services` may be attached later (`app.state.services`), as the Serve ingress does."""
    app = FastAPI(
        title="facecluster",
        version="0.1.0",
        description="Face recognition and clustering: profiles, clusters, persons, assignments and jobs.",
    )
    app.state.settings = settings
    app.state.services = services
    routers = (system, profiles, library, assignments, review, faces, data)
    for router in (module.router for module in routers):
        app.include_router(router)
    # The last added runs first: the upload limit, the Host check, CORS (its headers on every answer, 401s
    # too), the cross-site check, then the key, all before a route reads a body.
    origins = settings.serve.cors_origins
    app.add_middleware(AuditTrail)  # inside the key check: it knows the key's name
    app.add_middleware(KeyGuard, keys=settings.serve.api_keys)
    app.add_middleware(CrossSiteGuard, origins=origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,  # never credentials with a wildcard origin
            allow_methods=["*"],
            allow_headers=["*"],
        )
    hosts = allowed_hosts(settings.serve.allowed_hosts, settings.serve.serve_host)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(UploadLimit, limit=settings.serve.max_upload_bytes, max_parts=settings.serve.max_upload_parts)
    app.add_middleware(RequestTimeout, seconds=settings.serve.request_timeout_s)

    app.add_exception_handler(FaceclusterError, _answer)
    return app
