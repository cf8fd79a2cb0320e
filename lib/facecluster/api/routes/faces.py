"""Faces, clusters and persons: clustering runs, labelling, persons and their photos,
incremental assignment and search. Human changes are audited and can be undone."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Path, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from facecluster.api import schemas
from facecluster.api.audit import audits_itself, changes_nothing
from facecluster.api.services import (
    AUDIT_ID,
    PERSON_ID,
    Actor,
    ClusterId,
    Deps,
    FaceId,
    PersonId,
    Services,
    face_view,
    with_id,
)
from facecluster.api.uploads import analyze_upload
from facecluster.cluster.commands import run_cluster, run_match
from facecluster.cluster.methods import ClusterParams, Method
from facecluster.cluster.run import run_options
from facecluster.ingest.sources import validate_library
from facecluster.jobs import ClusterJob, ClusterOptions, TrainOptions, run_train_job
from facecluster.people.curation import Curator
from facecluster.store.vectors import Hit
from facecluster.store.versions import list_versions

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/faces", tags=["faces"])
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
LibraryQuery = Annotated[str | None, Query(description="default: the only library, when there is one")]
Page = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=500)]


def resolve_library(services: Services, given: str | None) -> str:
    """The named library, or the only one there is; a 422 that lists them otherwise."""
    if given is not None:
        return validate_library(given)
    known = services.meta.libraries()
    if len(known) == 1:
        return known[0]
    raise HTTPException(422, {"message": "say which library", "libraries": known[:100]})


def _curator(services: Services, actor: str, library: str) -> Curator:
    return Curator(services.meta, services.stores.vectors, library, actor)


def owning_library(services: Services, collection: str, key: str, what: str) -> str:
    """The library of the face, person, cluster or audit entry `key` of `collection`; 404 when unknown."""
    library = services.meta.owner_library(collection, key)
    if library is None:
        raise HTTPException(404, f"{what} {key} not found")
    return library


class DualRequest(BaseModel):
    library: str | None = None
    person_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    unknown_method: Method | None = None
    unknown_min_size: int | None = Field(default=None, ge=2, le=10_000)
    max_faces: int | None = Field(default=None, ge=1, le=1_000_000_000)
    incremental: bool = Field(
        default=False,
        description="cluster only the faces stored since the last run into the library's clustering "
        "(a library without a run gets a full one)",
    )
    queue: bool = Field(default=True, description="run as a Ray job; false clusters in this request")


@router.post(
    "/cluster/dual",
    summary="Dual-mode clustering: known persons first, then unknown clusters",
    response_model=schemas.DualAnswer,
)
def cluster_dual(services: Deps, body: DualRequest) -> dict[str, Any]:
    library = resolve_library(services, body.library)
    if body.queue:
        cluster = ClusterOptions(
            method="dual",
            person_threshold=body.person_threshold,
            unknown_method=body.unknown_method,
            min_cluster_size=body.unknown_min_size,
            max_faces=body.max_faces,
        )
        kind = "cluster-incremental" if body.incremental else "cluster-dual"
        job_id = services.jobs.submit(services.meta, kind, ClusterJob(library=library, cluster=cluster))
        return {"queued": True, "job_id": job_id, "library": library, "status_url": f"/api/v1/jobs/{job_id}"}
    summary = run_cluster(
        services.settings,
        library,
        stores=services.stores,
        method="dual",
        unknown_method=body.unknown_method,
        person_threshold=body.person_threshold,
        min_cluster_size=body.unknown_min_size,
        max_faces=body.max_faces,
        incremental=body.incremental,
    )
    return {"queued": False, "library": library, **summary.to_dict()}


class TrainRequest(TrainOptions):
    queue: bool = Field(default=True, description="run as a Ray job; false trains in this request")


@router.post(
    "/train",
    summary="Triplet fine-tuning on the labelled persons; re-projects every vector and switches",
    response_model=schemas.TrainAnswer,
)
def train(services: Deps, body: TrainRequest | None = None) -> dict[str, Any]:
    body = body or TrainRequest()
    library = None if body.library is None else resolve_library(services, body.library)
    options = TrainOptions.model_validate({**body.model_dump(exclude={"queue"}), "library": library})
    if body.queue:
        job_id = services.jobs.submit(services.meta, "train", options)
        return {"queued": True, "job_id": job_id, "status_url": f"/api/v1/jobs/{job_id}"}
    return {"queued": False, **run_train_job(services.settings, options, log.info)}


@router.get("/versions", summary="The active vector version and the trained ones", response_model=schemas.Versions)
def versions(services: Deps) -> dict[str, Any]:
    stores = services.stores
    trained = list_versions(stores.meta, stores.space.base)
    return {
        "active": stores.version,
        "base": stores.space.base,
        "versions": [with_id("version", d) for d in trained],
    }


class AssignNewRequest(BaseModel):
    library: str | None = None
    person_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_faces: int | None = Field(default=None, ge=1, le=1_000_000_000)


@router.post(
    "/assign",
    summary="Incremental assignment: new faces to known persons and clusters",
    response_model=schemas.MatchSummary,
)
def assign_new_faces(services: Deps, body: AssignNewRequest | None = None) -> dict[str, Any]:
    body = body or AssignNewRequest()
    library = resolve_library(services, body.library)
    summary = run_match(
        services.settings, services.stores, library, person_threshold=body.person_threshold, max_faces=body.max_faces
    )
    return vars(summary)


def page_window(page: int, size: int) -> tuple[int, int]:
    """The skip and limit of a 1-based page of `size` items."""
    return (page - 1) * size, size


@router.get(
    "/clusters",
    summary="Unknown clusters, largest first (unclustered faces are not listed)",
    response_model=schemas.ClusterPage,
)
def list_clusters(
    services: Deps, library: LibraryQuery = None, page: Page = 1, page_size: PageSize = 50
) -> dict[str, Any]:
    name = None if library is None else resolve_library(services, library)
    skip, limit = page_window(page, page_size)
    total, docs = services.meta.clusters_page(name, skip=skip, limit=limit)
    return {
        "total": total,
        "page": page,
        "page_size": page_size,
        "clusters": [with_id("cluster_id", d) for d in docs],
    }


@router.get(
    "/clusters/{cluster_id}",
    summary="One cluster with its faces, best quality first",
    response_model=schemas.ClusterDetail,
)
def get_cluster(services: Deps, cluster_id: ClusterId, page: Page = 1, page_size: PageSize = 100) -> dict[str, Any]:
    meta = services.meta
    doc = meta.cluster(cluster_id, centroid=False)
    if doc is None:
        raise HTTPException(404, f"cluster {cluster_id} not found")
    skip, limit = page_window(page, page_size)
    fields = ["image", "bbox", "score", "quality"]
    faces = meta.faces_in(None, fields, cluster_id=cluster_id, best_first=True, skip=skip, limit=limit)
    return {**with_id("cluster_id", doc), "faces": [face_view(f) for f in faces]}


class LabelRequest(BaseModel):
    name: Name


@router.post(
    "/clusters/{cluster_id}/label",
    summary="Name a cluster: its faces become that person",
    response_model=schemas.Labelled,
)
@audits_itself
def label_cluster(services: Deps, actor: Actor, cluster_id: ClusterId, body: LabelRequest) -> dict[str, Any]:
    library = owning_library(services, "clusters", cluster_id, "cluster")
    return _curator(services, actor, library).label_cluster(cluster_id, body.name.strip())


class SplitRequest(BaseModel):
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, description="default: 0.1 tighter than the run's")
    min_cluster_size: int | None = Field(default=None, ge=2, le=10_000)


@router.post(
    "/clusters/{cluster_id}/split", summary="Split a cluster with a tighter threshold", response_model=schemas.Split
)
@audits_itself
def split_cluster(
    services: Deps, actor: Actor, cluster_id: ClusterId, body: SplitRequest | None = None
) -> dict[str, Any]:
    body = body or SplitRequest()
    library = owning_library(services, "clusters", cluster_id, "cluster")
    stores = services.stores
    options = run_options(services.settings, stores.embedder, stores.version, unknown_method="graph")
    threshold = body.threshold if body.threshold is not None else min(0.95, options.unknown.threshold + 0.1)
    params = ClusterParams(
        method="graph",
        threshold=threshold,
        merge_threshold=max(threshold, options.unknown.merge_threshold),
        min_cluster_size=body.min_cluster_size or options.unknown.min_cluster_size,
    )
    return _curator(services, actor, library).split_cluster(cluster_id, params)


@router.get("/persons", summary="Persons, most faces first", response_model=schemas.PersonPage)
def list_persons(
    services: Deps,
    library: LibraryQuery = None,
    page: Page = 1,
    page_size: PageSize = 50,
    hidden: Annotated[bool, Query(description="include hidden persons")] = False,
) -> dict[str, Any]:
    name = resolve_library(services, library)
    curator = _curator(services, "anonymous", name)
    skip, limit = page_window(page, page_size)
    total, docs = curator.persons(skip=skip, limit=limit, hidden=hidden)
    return {
        "library": name,
        "total": total,
        "page": page,
        "page_size": page_size,
        "persons": [with_id("person_id", d) for d in docs],
    }


class PersonRequest(BaseModel):
    name: Name
    library: str | None = None


@router.post("/persons", status_code=201, summary="Create a person", response_model=schemas.PersonView)
@audits_itself
def create_person(services: Deps, actor: Actor, body: PersonRequest) -> dict[str, Any]:
    library = resolve_library(services, body.library)
    doc = _curator(services, actor, library).create_person(body.name.strip())
    return with_id("person_id", doc)


class PersonUpdate(BaseModel):
    name: Name | None = None
    hidden: bool | None = Field(default=None, description="hide from the galleries, or show again")


@router.patch(
    "/persons/{person_id}", summary="Rename a person, or hide or show them", response_model=schemas.PersonView
)
@audits_itself
def update_person(services: Deps, actor: Actor, person_id: PersonId, body: PersonUpdate) -> dict[str, Any]:
    if body.name is None and body.hidden is None:
        raise HTTPException(422, "give a name, hidden, or both")
    library = owning_library(services, "persons", person_id, "person")
    curator = _curator(services, actor, library)
    doc = curator.rename_person(person_id, body.name.strip()) if body.name is not None else {}
    if body.hidden is not None:
        doc = curator.hide_person(person_id, body.hidden)
    return with_id("person_id", doc)


class MergeRequest(BaseModel):
    into_person_id: str = Field(pattern=PERSON_ID)


@router.post("/persons/{person_id}/merge", summary="Merge this person into another", response_model=schemas.Merged)
@audits_itself
def merge_person(services: Deps, actor: Actor, person_id: PersonId, body: MergeRequest) -> dict[str, Any]:
    library = owning_library(services, "persons", person_id, "person")
    return _curator(services, actor, library).merge_persons(person_id, body.into_person_id)


@router.get(
    "/persons/{person_id}/photos",
    summary="The photos a person is in, with their face boxes",
    response_model=schemas.PersonPhotos,
)
def person_photos(services: Deps, person_id: PersonId, page: Page = 1, page_size: PageSize = 50) -> dict[str, Any]:
    library = owning_library(services, "persons", person_id, "person")
    faces = sorted(
        services.meta.faces_in(library, ["image", "bbox", "label_source"], person_id=person_id),
        key=lambda face: str(face["image"]),
    )
    photos: dict[str, list[dict[str, Any]]] = {}
    for face in faces:
        photos.setdefault(face["image"], []).append(
            {"face_id": face["_id"], "bbox": face.get("bbox"), "label_source": face.get("label_source")}
        )
    skip, limit = page_window(page, page_size)
    keys = sorted(photos)[skip : skip + limit]
    return {
        "person_id": person_id,
        "library": library,
        "total": len(photos),
        "page": page,
        "photos": [{"image": key, "faces": photos[key]} for key in keys],
    }


FaceIds = Annotated[list[Annotated[str, Field(pattern=r"^[0-9a-f-]{36}$")]], Field(min_length=1, max_length=10_000)]


class FacesRequest(BaseModel):
    face_ids: FaceIds


class MoveRequest(BaseModel):
    face_ids: FaceIds
    to_person_id: str | None = Field(default=None, pattern=PERSON_ID)
    new_name: Name | None = None


@router.post(
    "/persons/{person_id}/faces/remove", summary="Bulk-remove faces from a person", response_model=schemas.Removed
)
@audits_itself
def remove_faces(services: Deps, actor: Actor, person_id: PersonId, body: FacesRequest) -> dict[str, Any]:
    library = owning_library(services, "persons", person_id, "person")
    return _curator(services, actor, library).remove_faces(person_id, body.face_ids)


@router.post(
    "/persons/{person_id}/faces/move",
    summary="Bulk-move faces to another or a new person",
    response_model=schemas.Moved,
)
@audits_itself
def move_faces(services: Deps, actor: Actor, person_id: PersonId, body: MoveRequest) -> dict[str, Any]:
    if (body.to_person_id is None) == (body.new_name is None):
        raise HTTPException(422, "give exactly one of to_person_id and new_name")
    library = owning_library(services, "persons", person_id, "person")
    name = body.new_name.strip() if body.new_name else None
    return _curator(services, actor, library).move_faces(person_id, body.face_ids, to=body.to_person_id, name=name)


class PersonRef(BaseModel):
    person_id: str = Field(pattern=PERSON_ID)


@router.post("/faces/{face_id}/assign", summary="Assign one face to a person", response_model=schemas.FaceLabel)
@audits_itself
def assign_face(services: Deps, actor: Actor, face_id: FaceId, body: PersonRef) -> dict[str, Any]:
    library = owning_library(services, "faces", face_id, "face")
    return _curator(services, actor, library).assign_face(face_id, body.person_id)


@router.post("/faces/{face_id}/unassign", summary="Take one face from its person", response_model=schemas.FaceLabel)
@audits_itself
def unassign_face(services: Deps, actor: Actor, face_id: FaceId) -> dict[str, Any]:
    library = owning_library(services, "faces", face_id, "face")
    return _curator(services, actor, library).unassign_face(face_id)


@router.post(
    "/faces/{face_id}/not-person",
    summary='"Not this person": never match the face to it again',
    response_model=schemas.Rejected,
)
@audits_itself
def reject_face(services: Deps, actor: Actor, face_id: FaceId, body: PersonRef) -> dict[str, Any]:
    library = owning_library(services, "faces", face_id, "face")
    return _curator(services, actor, library).reject_face(face_id, body.person_id)


@router.get("/audit", summary="Changes to a library, newest first", response_model=schemas.AuditPage)
def audit_log(services: Deps, library: LibraryQuery = None, page: Page = 1, page_size: PageSize = 50) -> dict[str, Any]:
    name = resolve_library(services, library)
    skip, limit = page_window(page, page_size)
    total, entries = _curator(services, "anonymous", name).audit(skip=skip, limit=limit)
    return audit_answer(name, total, page, page_size, entries)


def audit_answer(library: str | None, total: int, page: int, page_size: int, entries: Any) -> dict[str, Any]:
    """A page of the audit as the API shows it."""
    listed = [with_id("audit_id", e) for e in entries]
    return {"library": library, "total": total, "page": page, "page_size": page_size, "entries": listed}


@router.post("/audit/{audit_id}/undo", summary="Undo a change", response_model=schemas.Undone)
@audits_itself
def undo(services: Deps, actor: Actor, audit_id: Annotated[str, Path(pattern=AUDIT_ID)]) -> dict[str, Any]:
    library = owning_library(services, "audit", audit_id, "audit entry")
    return _curator(services, actor, library).undo(audit_id)


@router.post(
    "/search",
    summary="Upload a photo: the nearest persons, faces and profiles of each face in it",
    response_model=schemas.SearchAnswer,
)
@changes_nothing
async def search(
    services: Deps,
    file: Annotated[UploadFile, File()],
    library: Annotated[str | None, Form()] = None,
    limit: Annotated[int, Form(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    name = None if library is None else resolve_library(services, library)
    _, analysis = await analyze_upload(services, file)
    faces = analysis.faces_above(services.detector_threshold, services.settings.detection.min_face_size)
    if not faces:
        return {"faces": []}
    stores = services.stores
    queries = stores.space.project(np.stack([f.vector for f in faces]))
    face_hits, profile_hits = await run_in_threadpool(stores.nearest, queries, limit, name)
    labels, persons = await run_in_threadpool(_labels_and_names, services, face_hits)
    out = []
    for face, hits, profiles in zip(faces, face_hits, profile_hits, strict=True):
        best: dict[str, float] = {}
        for hit in hits:
            person = labels.get(hit.id, {}).get("person_id")
            if person and hit.similarity > best.get(person, -2.0):
                best[person] = hit.similarity
        out.append(
            {
                **face.public(),
                "persons": [
                    {"person_id": p, "name": persons.get(p), "similarity": round(s, 4)}
                    for p, s in sorted(best.items(), key=lambda kv: -kv[1])
                ],
                "faces": [
                    {
                        "face_id": h.id,
                        "image": h.payload.get("image"),
                        "library": h.payload.get("library"),
                        "person_id": labels.get(h.id, {}).get("person_id"),
                        "cluster_id": labels.get(h.id, {}).get("cluster_id"),
                        "similarity": round(h.similarity, 4),
                    }
                    for h in hits
                ],
                "profiles": [
                    {"user_id": h.payload.get("user_id"), "similarity": round(h.similarity, 4)} for h in profiles
                ],
            }
        )
    return {"faces": out}


def _labels_and_names(services: Services, hits: list[list[Hit]]) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
    """The cluster and person of each hit (MongoDB holds the labels, the vectors do not) and the persons' names."""
    faces = services.meta.faces_by_id(sorted({h.id for face in hits for h in face}), ["cluster_id", "person_id"])
    labels: dict[str, Mapping[str, Any]] = {f["_id"]: f for f in faces}
    return labels, services.meta.person_names({str(p) for f in faces if (p := f.get("person_id"))})
