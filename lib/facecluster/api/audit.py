"""Every change made through the API leaves an audit entry. Routes whose work records itself in detail
(curation with its before and after, erasure, library deletion) are marked `audits_itself`; every other
change (enrolment, profile updates, assignments, clustering and training jobs, version switches, job stops,
cleanup) gets an entry naming the actor, the route, the library and the target, never a body's contents."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facecluster.api.services import actor, current_services
from facecluster.store.documents import AuditDoc, audit_entry

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def audits_itself(endpoint: Endpoint) -> Endpoint:
    """Mark a route whose work records its own, detailed audit entry."""
    endpoint.__audited__ = True  # type: ignore[attr-defined]
    return endpoint


def changes_nothing(endpoint: Endpoint) -> Endpoint:
    """Mark a POST that only reads (a search by photo): there is no change to audit."""
    endpoint.__audited__ = True  # type: ignore[attr-defined]
    return endpoint


def note_target(request: Request, target: str) -> None:
    """Name what a change is about when its path does not (an enrolment's user id is in its form)."""
    request.state.audit_target = target


def entry_for(scope: Scope, status: int, who: str) -> AuditDoc | None:
    """The audit entry of a successful change, or None when its route audits itself or none matched."""
    route, endpoint = scope.get("route"), scope.get("endpoint")
    if route is None or getattr(endpoint, "__audited__", False):
        return None
    params: dict[str, Any] = dict(scope.get("path_params") or {})
    query = dict(Request(scope).query_params)
    if "bucket" in params and "sub" in params:
        library = f"{params.pop('bucket')}/{params.pop('sub')}"
    else:
        library = str(params.pop("library", None) or query.get("library") or "")
    target = scope.get("state", {}).get("audit_target") or ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    action = f"{scope['method']} {getattr(route, 'path_format', scope['path'])}"
    # a request entry is not undoable; curation's own entries are the undoable ones
    details = {"status": status, "query": query}
    return audit_entry(library, who, action, target, details=details, undone_by="not undoable")


class AuditTrail:
    """Record an entry for each successful change before its answer is sent, so a client that reads the
    audit right after sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES:
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                services = current_services(scope.get("app"))
                entry = entry_for(scope, message["status"], actor(Request(scope)))
                if services is not None and entry is not None:
                    await run_in_threadpool(services.meta.record_audit, entry)
            await send(message)

        await self.app(scope, receive, sending)
