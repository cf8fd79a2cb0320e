"""Person clustering of a library: start it as a Ray job, its status, a person's
details, and cleanup."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from facecluster.api import schemas
from facecluster.api.services import (
    CLUSTER_ID,
    PERSON_ID,
    RUN_ID,
    Bucket,
    Deps,
    Services,
    Sub,
    face_view,
    library_of,
    with_id,
)
from facecluster.jobs import PipelineJob
from facecluster.people.erasure import cleanup_clustering

router = APIRouter(tags=["person clustering"])


def library_source(services: Services, bucket: str, sub: str) -> str:
    """Where a library's photos are: <library_root>/<bucket>/<sub> when configured, else S3."""
    root = services.settings.general.library_root
    if root is None:
        return f"s3://{bucket}/{sub}/"
    folder = root.expanduser() / bucket / sub
    if not folder.is_dir():
        raise HTTPException(404, f"no folder {bucket}/{sub} under the library root")
    return str(folder)


@router.post(
    "/cluster-bucket-persons/{bucket}/{sub}",
    status_code=202,
    summary="Ingest and cluster a library",
    response_model=schemas.PipelineQueued,
)
def cluster_bucket_persons(
    services: Deps, bucket: Bucket, sub: Sub, force: Annotated[bool, Query(description="redo done photos")] = False
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    source = library_source(services, bucket, sub)
    options = PipelineJob(source=source, library=library, force=force)
    job_id = services.jobs.submit(services.meta, "cluster-bucket-persons", options)
    return {"job_id": job_id, "library": library, "source": source, "status_url": f"/api/v1/jobs/{job_id}"}


def _run(doc: Mapping[str, Any]) -> dict[str, Any]:
    return with_id("clustering_id", doc)


@router.get(
    "/person-cluster-status/{bucket}/{sub}",
    summary="Clustering runs of a library, or one run",
    response_model=schemas.ClusterStatus,
)
def person_cluster_status(
    services: Deps,
    bucket: Bucket,
    sub: Sub,
    clustering_id: Annotated[str | None, Query(pattern=RUN_ID)] = None,
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    meta = services.meta
    if clustering_id is not None:
        run = meta.run(clustering_id, library)
        if run is None:
            raise HTTPException(404, f"clustering {clustering_id} not found in library {library}")
        latest = meta.latest_run(library)
        return {"library": library, "run": _run(run), "current": latest is not None and latest["_id"] == clustering_id}
    runs = meta.runs(library, 50)
    jobs = meta.jobs_of(library, 20, kind="ingest")
    return {
        "library": library,
        "images": meta.image_counts(library),
        "runs": [_run(r) for r in runs],
        "ingest_jobs": [{"job_id": j["_id"], **{k: v for k, v in j.items() if k != "_id"}} for j in jobs],
    }


@router.get(
    "/person-details/{bucket}/{sub}/{person_id}",
    summary="A cluster's or a person's faces and owner face",
    response_model=schemas.PersonDetails,
)
def person_details(
    services: Deps,
    bucket: Bucket,
    sub: Sub,
    person_id: Annotated[str, Path(pattern=f"({CLUSTER_ID})|({PERSON_ID})", description="a cluster or person id")],
    skip: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    library = library_of(bucket, sub)
    meta = services.meta
    field = "cluster_id" if person_id.startswith("clu_") else "person_id"
    who: dict[str, str | None] = {"person_id": None, "cluster_id": None, field: person_id}
    fields = ["image", "bbox", "score", "quality", "person_id", "cluster_id", "label_source", "person_similarity"]
    total = meta.count_faces(library, person_id=who["person_id"], cluster_id=who["cluster_id"])
    if total == 0:
        raise HTTPException(404, f"{person_id} has no faces in library {library}")
    ranked = partial(meta.faces_in, library, fields, person_id=who["person_id"], cluster_id=who["cluster_id"])
    faces = ranked(best_first=True, skip=skip, limit=limit)
    owner = ranked(best_first=True, limit=1)[0]
    person = meta.person(person_id) if field == "person_id" else None
    assignments = meta.assignments(library=library, cluster_id=person_id)
    images = meta.face_images(library, person_id=who["person_id"], cluster_id=who["cluster_id"])
    return {
        "library": library,
        "id": person_id,
        "kind": "cluster" if field == "cluster_id" else "person",
        "name": person["name"] if person else None,
        "faces": total,
        "images": len(images),
        "owner_face": face_view(owner),
        "appearances": [face_view(f) for f in faces],
        "assignments": [{k: v for k, v in a.items() if k != "_id"} for a in assignments],
    }


@router.delete(
    "/cleanup-person-data/{bucket}/{sub}",
    summary="Undo a clustering run: its clusters, machine labels and assignments (never faces or human labels)",
    response_model=schemas.Cleanup,
)
def cleanup_person_data(
    services: Deps,
    bucket: Bucket,
    sub: Sub,
    clustering_id: Annotated[str | None, Query(pattern=RUN_ID, description="default: the latest run")] = None,
    cleanup_assignments: Annotated[bool, Query(description="also delete the run's assignments")] = True,
    dry_run: Annotated[bool, Query(description="only count what would go")] = False,
) -> dict[str, Any]:
    return cleanup_clustering(
        services.stores,
        library_of(bucket, sub),
        clustering_id=clustering_id,
        assignments=cleanup_assignments,
        dry_run=dry_run,
    )
