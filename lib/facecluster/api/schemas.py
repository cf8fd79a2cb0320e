"""The shapes of the API's answers, so the OpenAPI spec (and the clients generated from it) shows every one.

Each model names the fields a client can rely on; a few answers carry more (a run's parameters, a
document's timestamps), which pass through as they are.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# System and jobs.
class Health(Answer):
    status: str


class Check(Answer):
    ok: bool
    error: str | None = None


class Readiness(Answer):
    ready: bool
    checks: dict[str, Check]


class JobStatus(Answer):
    job_id: str
    kind: str
    library: str | None
    status: str = Field(description="Ray's state: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED")
    message: str | None
    options: dict[str, Any] | None
    progress: str | None = Field(description="the job's last progress report")
    result: dict[str, Any] | None = Field(description="its result once it has ended; `error` when it failed")
    start_time: int | None
    end_time: int | None


class StoppedJob(JobStatus):
    stop_requested: bool


class Queued(Answer):
    job_id: str
    status_url: str
    library: str | None = None


# Faces, clusters, persons.
class FaceView(Answer):
    face_id: str
    image: str
    bbox: list[float]
    score: float
    quality: float
    cluster_id: str | None
    person_id: str | None
    label_source: str | None = None


class DualAnswer(Answer):
    queued: bool
    library: str
    job_id: str | None = None
    status_url: str | None = None
    run_id: str | None = Field(default=None, description="with the run's summary when it ran in the request")


class TrainAnswer(Answer):
    queued: bool
    job_id: str | None = None
    status_url: str | None = None
    version: str | None = Field(default=None, description="with the training report when it ran in the request")


class Versions(Answer):
    active: str
    base: str
    versions: list[dict[str, Any]]


class MatchSummary(Answer):
    library: str
    considered: int
    to_persons: int
    to_clusters: int
    seconds: float


class ClusterView(Answer):
    cluster_id: str
    library: str
    size: int


class ClusterPage(Answer):
    total: int
    page: int
    page_size: int
    clusters: list[ClusterView]


class ClusterDetail(ClusterView):
    faces: list[FaceView]


class Labelled(Answer):
    cluster_id: str
    person_id: str
    name: str
    faces: int


class ClusterSize(Answer):
    cluster_id: str
    size: int


class Split(Answer):
    cluster_id: str
    clusters: list[ClusterSize]
    unclustered: int


class PersonView(Answer):
    person_id: str
    library: str
    name: str
    merged_into: str | None = None
    hidden: bool | None = None
    faces: int | None = Field(default=None, description="in lists: the person's faces")
    owner_face_id: str | None = Field(default=None, description="in lists: the best-quality face")


class PersonPage(Answer):
    library: str
    total: int
    page: int
    page_size: int
    persons: list[PersonView]


class Merged(Answer):
    person_id: str
    merged: str
    faces_moved: int


class PhotoFace(Answer):
    face_id: str
    bbox: list[float] | None
    label_source: str | None


class Photo(Answer):
    image: str
    faces: list[PhotoFace]


class PersonPhotos(Answer):
    person_id: str
    library: str
    total: int
    page: int
    photos: list[Photo]


class PersonFaces(Answer):
    person_id: str
    library: str
    total: int
    faces: list[FaceView]


class Removed(Answer):
    person_id: str
    removed: int


class Moved(Answer):
    from_: str = Field(alias="from")
    to: str
    moved: int


class FaceLabel(Answer):
    face_id: str
    person_id: str | None


class Rejected(Answer):
    face_id: str
    rejected_persons: list[str]


class AuditEntry(Answer):
    audit_id: str
    library: str | None = None
    actor: str
    action: str
    target: str
    at: dt.datetime
    faces: int
    details: dict[str, Any]
    undone_by: str | None


class AuditPage(Answer):
    library: str | None
    total: int
    page: int
    page_size: int
    entries: list[AuditEntry]


class Undone(Answer):
    undone: str
    audit_id: str
    faces: int


class PersonHit(Answer):
    person_id: str
    name: str | None
    similarity: float


class FaceHit(Answer):
    face_id: str
    image: str | None
    library: str | None
    person_id: str | None
    cluster_id: str | None
    similarity: float


class ProfileHit(Answer):
    user_id: str | None
    similarity: float


class FoundFace(Answer):
    bbox: list[float]
    score: float
    quality: dict[str, Any]
    persons: list[PersonHit]
    faces: list[FaceHit]
    profiles: list[ProfileHit]


class SearchAnswer(Answer):
    faces: list[FoundFace]


class Libraries(Answer):
    libraries: list[str]


class LibraryStats(Answer):
    library: str | None
    faces: int
    persons: int
    clusters: int
    unclustered: int
    human_labelled: int
    auto_assigned: int
    faces_per_person: dict[str, int]
    multi_person_images: int
    centroid_similarity: dict[str, Any] | None = None
    latest_run: dict[str, Any] | None = None


# Person clustering of a library.
class PipelineQueued(Queued):
    source: str


class ClusterStatus(Answer):
    library: str
    run: dict[str, Any] | None = Field(default=None, description="with clustering_id: that run")
    current: bool | None = Field(default=None, description="with clustering_id: whether it is the latest run")
    images: dict[str, int] | None = Field(default=None, description="without clustering_id: photos by state")
    runs: list[dict[str, Any]] | None = None
    ingest_jobs: list[dict[str, Any]] | None = None


class PersonDetails(Answer):
    library: str
    id: str
    kind: str = Field(description="cluster or person")
    name: str | None
    faces: int
    images: int
    owner_face: FaceView
    appearances: list[FaceView]
    assignments: list[dict[str, Any]]


class Cleanup(Answer):
    library: str
    clustering_id: str
    dry_run: bool
    removed: dict[str, int] = Field(description="clusters, faces_unclustered, auto_labels, assignments")


class StoreCounts(Answer):
    mongodb: dict[str, int]
    qdrant: dict[str, int]


class Erased(StoreCounts):
    erased: str = Field(description="face, image, person or user")
    target: str
    audit_id: str


class LibraryDeleted(StoreCounts):
    library: str
    audit_id: str


# Profiles.
class Enrolled(Answer):
    user_id: str
    has_face: bool
    face: dict[str, Any]
    faces: int
    model_version: str


class QualitySettings(Answer):
    min_face_size: int
    min_confidence: float
    blur_threshold: float
    detector: str
    detector_threshold: float
    embedder: str
    quality_weights: dict[str, float]


class Profile(Answer):
    user_id: str
    faces: list[dict[str, Any]]
    model_version: str | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class ProfilePage(Answer):
    total: int
    profiles: list[Profile]


class ProfileDeleted(Answer):
    user_id: str
    deleted: bool
    assignments_deleted: int


# Assignments.
class AssignBatch(Answer):
    libraries: list[Any] = Field(description="queued: the library names; in the request: one report per library")
    job_id: str | None = None
    status_url: str | None = None


class UserAssignments(Answer):
    user_id: str
    total: int
    page: int
    page_size: int
    runs: list[dict[str, Any]]


class Collections(Answer):
    collections: dict[str, int]
    libraries: list[str]
    vectors: str


class CollectionSample(Answer):
    collection: str
    count: int
    fields: list[str]
    sample: dict[str, Any] | None


class AssignmentsDeleted(Answer):
    clustering_id: str
    deleted: int


class AssignmentList(Answer):
    library: str
    clustering_id: str | None
    total: int
    page: int
    page_size: int
    assignments: list[dict[str, Any]]


class AssignReport(Answer):
    library: str
    clustering_id: str
    strategy: str
    threshold: float
    dry_run: bool
    assigned: int
    unassigned: int
    kept: int
    decisions: list[dict[str, Any]]
