"""API keys with scopes, checked before a route runs or a body is read.

With keys configured (`FACECLUSTER_API_KEYS`: `name:secret` reads and writes, `name:secret:read` only
reads, `name:secret:admin` may also use the debug routes, delete and erase), every route but health,
readiness, the docs and the review page's shell needs a key in the X-API-Key header: 401 without one,
403 when its scope is too small.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

Access = Literal["read", "write", "admin"]
RANK: dict[Access, int] = {"read": 0, "write": 1, "admin": 2}
#: What answers without a key.
PUBLIC = frozenset({"/health", "/ready", "/openapi.json", "/ui", "/docs", "/docs/oauth2-redirect", "/redoc"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: str
    access: Access


def parse_keys(keys: Sequence[SecretStr]) -> list[ApiKey]:
    """`name:secret[:read|write|admin]` (a bare secret is `keyN`, write)."""
    parsed: list[ApiKey] = []
    for index, key in enumerate(keys, 1):
        parts = key.get_secret_value().split(":")
        access: Access = "write"
        if len(parts) >= 3 and parts[-1] in RANK:
            access = parts.pop()  # type: ignore[assignment]
        name, secret = (parts[0], ":".join(parts[1:])) if len(parts) > 1 else (f"key{index}", parts[0])
        parsed.append(ApiKey(name or f"key{index}", secret, access))
    return parsed


def required_access(method: str, path: str) -> Access | None:
    """What a request needs: nothing for the public routes, `admin` for debug routes, deletions and
    erasure, `write` for other changes, `read` for every other read."""
    if path in PUBLIC or method == "OPTIONS":
        return None
    if "debug" in path or method == "DELETE" or path.rstrip("/") == "/api/v1/erasure":
        return "admin"
    return "read" if method in SAFE_METHODS else "write"


def match_key(keys: Sequence[ApiKey], given: str) -> ApiKey | None:
    found = None
    for key in keys:  # compare with every key, in constant time each
        if given and hmac.compare_digest(given.encode(), key.secret.encode()):
            found = key
    return found


class KeyGuard:
    """ASGI middleware: the key and its scope are checked from the headers alone, before the app runs
    (so before any body is read); the key's name is left in the request state for the audit."""

    def __init__(self, app: ASGIApp, keys: Sequence[SecretStr]) -> None:
        self.app = app
        self.keys = parse_keys(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            await self.app(scope, receive, send)
            return
        needed = required_access(scope["method"], scope["path"])
        if needed is not None:
            headers = dict(scope.get("headers") or [])
            key = match_key(self.keys, headers.get(b"x-api-key", b"").decode("latin-1"))
            if key is None:
                detail = "a valid X-API-Key header is required for this route"
                await JSONResponse({"detail": detail}, 401, {"WWW-Authenticate": "API-Key"})(scope, receive, send)
                return
            if RANK[key.access] < RANK[needed]:
                detail = f"the key {key.name!r} may {key.access}; this route needs {needed} access"
                await JSONResponse({"detail": detail}, 403)(scope, receive, send)
                return
            scope.setdefault("state", {})["key_name"] = key.name
        await self.app(scope, receive, send)


def allowed_hosts(configured: Sequence[str], bound: str) -> list[str]:
    """The Host headers to answer: the configured ones, else the loopback names when the API is bound to
    loopback (a web page cannot reach it through a rebound DNS name), else any."""
    if configured:
        return list(configured)
    try:
        loopback = bound == "localhost" or ipaddress.ip_address(bound).is_loopback
    except ValueError:
        loopback = False
    return ["localhost", "127.0.0.1", "[::1]", "::1"] if loopback else ["*"]


#: Content types a web page may send cross-site without asking first: never accepted for a change.
_SIMPLE_FORMS = {b"application/x-www-form-urlencoded", b"text/plain"}


class CrossSiteGuard:
    """ASGI middleware against cross-site requests from web pages: a change never comes form-encoded
    (415), and a change from a page of another origin is refused (403) unless CORS allows that origin.
    Clients that are not browsers send no Origin and are not affected."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope.get("headers") or [])
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind in _SIMPLE_FORMS:
                detail = "a change is sent as application/json or multipart/form-data"
                await JSONResponse({"detail": detail}, 415)(scope, receive, send)
                return
            origin = headers.get(b"origin", b"").decode("latin-1")
            if origin and not self._allowed(origin, headers.get(b"host", b"").decode("latin-1")):
                detail = f"cross-site request from {origin} refused"
                await JSONResponse({"detail": detail}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        if "*" in self.origins or origin in self.origins:
            return True
        return origin != "null" and urlsplit(origin).netloc == host
