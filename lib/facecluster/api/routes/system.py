"""Liveness, readiness and the state of Ray jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from facecluster.api import schemas
from facecluster.api.routes.faces import Page, PageSize, audit_answer, page_window
from facecluster.api.services import JOB_ID, Deps, Services

router = APIRouter(tags=["system"])
JobId = Annotated[str, Path(pattern=JOB_ID)]  # an unknown one is JobNotFound: 404


def probe(services: Services) -> dict[str, Any]:
    """Whether MongoDB, Qdrant and Ray answer, with the error of any that does not."""
    checks: dict[str, Any] = {}
    try:
        services.meta.ping()
        checks["mongodb"] = {"ok": True}
    except Exception as exc:  # any failure means not reachable
        checks["mongodb"] = {"ok": False, "error": str(exc)[:300]}
    try:
        checks["qdrant"] = {"ok": True, "points": services.stores.vectors.count()}
    except Exception as exc:
        checks["qdrant"] = {"ok": False, "error": str(exc)[:300]}
    import ray

    checks["ray"] = {"ok": ray.is_initialized()} if ray.is_initialized() else {"ok": False, "error": "not connected"}
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


@router.get("/health", summary="The process is alive", response_model=schemas.Health)
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="MongoDB, Qdrant and Ray are reachable (503 naming the one that is not)",
    response_model=schemas.Readiness,
)
def ready(services: Deps) -> JSONResponse:
    report = probe(services)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)


@router.get(
    "/api/v1/audit",
    summary="Every change made, newest first: curation, enrolment, assignment, jobs, erasure (no biometric data)",
    response_model=schemas.AuditPage,
)
def audit(services: Deps, page: Page = 1, page_size: PageSize = 50) -> dict[str, Any]:
    skip, limit = page_window(page, page_size)
    total, entries = services.meta.audit_page(None, skip=skip, limit=limit)
    return audit_answer(None, total, page, page_size, entries)


@router.get(
    "/api/v1/jobs/{job_id}", summary="A Ray job's status, progress and result", response_model=schemas.JobStatus
)
def job_status(services: Deps, job_id: JobId) -> dict[str, Any]:
    return services.jobs.status(services.meta, job_id)


@router.delete(
    "/api/v1/jobs/{job_id}",
    summary="Stop a Ray job; an ingest resumes where it stopped when started again",
    response_model=schemas.StoppedJob,
)
def stop_job(services: Deps, job_id: JobId) -> dict[str, Any]:
    return services.jobs.stop(services.meta, job_id)
