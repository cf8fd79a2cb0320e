"""The HTTP API (FastAPI); `facecluster.api.serving` runs it on Ray Serve."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facecluster.api.routes import assignments, data, faces, library, profiles, review, system
from facecluster.api.security import CrossSiteGuard, KeyGuard, allowed_hosts
from facecluster.api.services import Services
from facecluster.errors import FaceclusterError
from facecluster.settings import Settings


class UploadLimit:
    """Refuse a request body larger than the upload limit (413): at once when Content-Length says so, and
    while it streams otherwise (chunked uploads), counted as it is received, so it is never held whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit + 64 * 1024  # room for the multipart envelope around a file of the limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request is larger than the limit of {self.limit - 64 * 1024} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": message}, 413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, message)  # the route's body parsing passes it on as it is
            return event

        await self.app(scope, counted, send)


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
    app.add_middleware(UploadLimit, limit=settings.serve.max_upload_bytes)

    app.add_exception_handler(FaceclusterError, _answer)
    return app
