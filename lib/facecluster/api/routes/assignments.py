"""Cluster → known user assignments. Static routes come before parameterised ones."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from facecluster.api import schemas
from facecluster.api.routes.faces import Page, PageSize, page_window
from facecluster.api.services import RUN_ID, Bucket, Deps, Sub, UserId, library_of
from facecluster.cluster.assignment import Strategy
from facecluster.cluster.commands import run_assignment
from facecluster.ingest.sources import validate_library
from facecluster.jobs import AssignJob, assign_libraries
from facecluster.store.meta import INSPECTABLE

log = logging.getLogger(__name__)
router = APIRouter(prefix="/assignments", tags=["assignments"])


class BatchRequest(AssignJob):
    queue: bool = Field(default=True, description="run as a Ray job; false runs it in this request")


@router.post("/batch", summary="Assign the latest clustering of several libraries", response_model=schemas.AssignBatch)
def assign_batch(services: Deps, body: BatchRequest | None = None) -> dict[str, Any]:
    body = body or BatchRequest()
    libraries = [validate_library(name) for name in body.libraries or services.meta.libraries()]
    options = AssignJob.model_validate({**body.model_dump(exclude={"queue"}), "libraries": libraries})
    if body.queue:
        job_id = services.jobs.submit(services.meta, "assign-batch", options)
        return {"job_id": job_id, "libraries": libraries, "status_url": f"/api/v1/jobs/{job_id}"}
    return assign_libraries(services.settings, services.stores, options, log.info)


@router.get(
    "/user/{user_id}", summary="A user's assignments, grouped by clustering run", response_model=schemas.UserAssignments
)
def assignments_of_user(services: Deps, user_id: UserId, page: Page = 1, page_size: PageSize = 100) -> dict[str, Any]:
    skip, limit = page_window(page, page_size)
    docs = services.meta.assignments(user_id=user_id, sort="assigned_at", skip=skip, limit=limit)
    runs: dict[str, dict[str, Any]] = {}
    for doc in docs:
        run = runs.setdefault(
            doc["clustering_id"], {"clustering_id": doc["clustering_id"], "library": doc["library"], "clusters": []}
        )
        run["clusters"].append({k: v for k, v in doc.items() if k not in ("_id", "library", "clustering_id")})
    total = services.meta.count_assignments(user_id=user_id)
    return {"user_id": user_id, "total": total, "page": page, "page_size": page_size, "runs": list(runs.values())}


@router.get(
    "/debug/collections", summary="Collections and their sizes, and the libraries", response_model=schemas.Collections
)
def debug_collections(services: Deps) -> dict[str, Any]:
    meta = services.meta
    return {
        "collections": meta.collection_counts(),
        "libraries": meta.libraries(),
        "vectors": services.stores.config.qdrant.collection,
    }


@router.get(
    "/debug/collection/{collection_name}",
    summary="One collection's fields and a sample document",
    response_model=schemas.CollectionSample,
)
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


@router.get(
    "/debug/test-db-connection", summary="Can the API reach MongoDB and Qdrant?", response_model=schemas.Readiness
)
def debug_db_connection(services: Deps) -> dict[str, Any]:
    from facecluster.api.routes.system import probe

    return probe(services)


@router.delete(
    "/clustering/{clustering_id}",
    summary="Delete every assignment of a clustering run",
    response_model=schemas.AssignmentsDeleted,
)
def delete_run_assignments(services: Deps, clustering_id: Annotated[str, Path(pattern=RUN_ID)]) -> dict[str, Any]:
    deleted = services.meta.delete_assignments(clustering_id=clustering_id)
    return {"clustering_id": clustering_id, "deleted": deleted}


@router.get(
    "/{bucket}/{sub}", summary="Assignments of a library's clustering run", response_model=schemas.AssignmentList
)
def list_assignments(
    services: Deps,
    bucket: Bucket,
    sub: Sub,
    clustering_id: Annotated[str | None, Query(pattern=RUN_ID)] = None,
    page: Page = 1,
    page_size: PageSize = 100,
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    skip, limit = page_window(page, page_size)
    docs = services.meta.assignments(library=library, clustering_id=clustering_id, skip=skip, limit=limit)
    return {
        "library": library,
        "clustering_id": clustering_id,
        "total": services.meta.count_assignments(library=library, clustering_id=clustering_id),
        "page": page,
        "page_size": page_size,
        "assignments": [{k: v for k, v in d.items() if k != "_id"} for d in docs],
    }


@router.post(
    "/{bucket}/{sub}", summary="Assign a library's clusters to known users", response_model=schemas.AssignReport
)
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
    report = run_assignment(
        services.settings,
        services.stores,
        library,
        strategy=strategy,
        threshold=threshold,
        clustering_id=clustering_id,
        dry_run=dry_run,
        overwrite=overwrite,
    )
    return report.to_dict()
