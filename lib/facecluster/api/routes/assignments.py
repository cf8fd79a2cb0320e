"""Cluster → known user assignments (second seed). Static routes come before parameterised ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from facecluster.api.jobs import options
from facecluster.api.services import RUN_ID, Bucket, Deps, Services, Sub, UserId, library_of
from facecluster.cluster.assignment import AssignReport, ClusteringNotFound, ClusteringSuperseded, Strategy
from facecluster.cluster.commands import run_assignment
from facecluster.ingest.sources import validate_library
from facecluster.store.meta import INSPECTABLE

router = APIRouter(prefix="/assignments", tags=["assignments"])


def assign_or_answer(services: Services, library: str, **options: Any) -> AssignReport:
    """`run_assignment` on the API's stores; an unknown or superseded run is a 404 or 409."""
    try:
        return run_assignment(services.settings, services.stores, library, **options)
    except ClusteringNotFound as exc:
        raise HTTPException(404, f"clustering not found: {exc.args[0]}") from None
    except ClusteringSuperseded as exc:
        raise HTTPException(409, str(exc)) from None


class BatchRequest(BaseModel):
    libraries: list[str] | None = Field(default=None, description="default: every library", max_length=1000)
    strategy: Strategy | None = None
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    overwrite: bool = False
    dry_run: bool = False
    queue: bool = Field(default=True, description="run as a Ray job; false runs it in this request")


@router.post("/batch", summary="Assign the latest clustering of several libraries")
def assign_batch(services: Deps, body: BatchRequest | None = None) -> dict[str, Any]:
    body = body or BatchRequest()
    libraries = [validate_library(name) for name in body.libraries or services.meta.libraries()]
    if body.queue:
        flags = options(
            ("--strategy", body.strategy),
            ("--threshold", body.threshold),
            ("--overwrite", body.overwrite),
            ("--dry-run", body.dry_run),
        )
        arguments = ["assign", *[a for name in libraries for a in ("--library", name)], *flags]
        job_id = services.jobs.submit("assign-batch", arguments)
        return {"job_id": job_id, "libraries": libraries, "status_url": f"/api/v1/jobs/{job_id}"}
    reports = []
    for library in libraries:
        try:
            report = assign_or_answer(
                services,
                library,
                strategy=body.strategy,
                threshold=body.threshold,
                dry_run=body.dry_run,
                overwrite=body.overwrite,
            )
        except HTTPException as exc:
            reports.append({"library": library, "error": exc.detail})
            continue
        reports.append({k: v for k, v in report.to_dict().items() if k != "decisions"})
    return {"libraries": reports}


@router.get("/user/{user_id}", summary="A user's assignments, grouped by clustering run")
def assignments_of_user(services: Deps, user_id: UserId) -> dict[str, Any]:
    docs = services.meta.assignments(user_id=user_id, sort="assigned_at")
    runs: dict[str, dict[str, Any]] = {}
    for doc in docs:
        run = runs.setdefault(
            doc["clustering_id"], {"clustering_id": doc["clustering_id"], "library": doc["library"], "clusters": []}
        )
        run["clusters"].append({k: v for k, v in doc.items() if k not in ("_id", "library", "clustering_id")})
    return {"user_id": user_id, "total": len(docs), "runs": list(runs.values())}


@router.get("/debug/collections", summary="Collections and their sizes, and the libraries")
def debug_collections(services: Deps) -> dict[str, Any]:
    meta = services.meta
    return {
        "collections": meta.collection_counts(),
        "libraries": meta.libraries(),
        "vectors": services.stores.config.qdrant.collection,
    }


@router.get("/debug/collection/{collection_name}", summary="One collection's fields and a sample document")
def debug_collection(
    services: Deps, collection_name: Annotated[str, Path(pattern=f"^({'|'.join(INSPECTABLE)})$")]
) -> dict[str, Any]:
    meta = services.meta
    sample = meta.collection_sample(collection_name)
    return {
        "collection": collection_name,
        "count": meta.collection_counts()[collection_name],
        "fields": sorted(sample) if sample else [],
        "sample": sample,
    }


@router.get("/debug/test-db-connection", summary="Can the API reach MongoDB and Qdrant?")
def debug_db_connection(services: Deps) -> dict[str, Any]:
    from facecluster.api.routes.system import probe

    return probe(services)


@router.delete("/clustering/{clustering_id}", summary="Delete every assignment of a clustering run")
def delete_run_assignments(services: Deps, clustering_id: Annotated[str, Path(pattern=RUN_ID)]) -> dict[str, Any]:
    deleted = services.meta.delete_assignments(clustering_id=clustering_id)
    return {"clustering_id": clustering_id, "deleted": deleted}


@router.get("/{bucket}/{sub}", summary="Assignments of a library's clustering run")
def list_assignments(
    services: Deps, bucket: Bucket, sub: Sub, clustering_id: Annotated[str | None, Query(pattern=RUN_ID)] = None
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    docs = services.meta.assignments(library=library, clustering_id=clustering_id)
    return {
        "library": library,
        "clustering_id": clustering_id,
        "total": len(docs),
        "assignments": [{k: v for k, v in d.items() if k != "_id"} for d in docs],
    }


@router.post("/{bucket}/{sub}", summary="Assign a library's clusters to known users")
def assign_library(
    services: Deps,
    bucket: Bucket,
    sub: Sub,
    clustering_id: Annotated[str | None, Query(pattern=RUN_ID, description="default: the latest run")] = None,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    strategy: Strategy | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    report = assign_or_answer(
        services,
        library,
        strategy=strategy,
        threshold=threshold,
        clustering_id=clustering_id,
        dry_run=dry_run,
        overwrite=overwrite,
    )
    return report.to_dict()
