"""Erasure and deletion: biometric data removed from every copy, and kept from coming back.

Erasing a face, a photo, a person or a user removes the face documents, their vectors from every Qdrant
collection of every vector version, the profile and its templates, and the assignments; it recomputes
the clusters the faces left (a centroid is made of their vectors), redacts the person's name from the
audit, writes an audit entry without biometric data, and leaves a tombstone (photo and face box) so no
later ingest, `--force` included, stores the face again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from facecluster.cluster.run import mend_clusters
from facecluster.errors import InvalidInput, NotFound
from facecluster.logs import Progress
from facecluster.people.profiles import point_id
from facecluster.store.connection import Connection
from facecluster.store.documents import FaceDoc, audit_entry
from facecluster.store.meta import MetaStore, now
from facecluster.store.vectors import Vectors

ERASED = "[erased]"


@dataclass
class Counts:
    """What an erasure or deletion removed, per store."""

    mongodb: dict[str, int] = field(default_factory=dict)
    qdrant: dict[str, int] = field(default_factory=dict)

    def add(self, store: dict[str, int], name: str, count: int) -> None:
        store[name] = store.get(name, 0) + int(count)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {"mongodb": self.mongodb, "qdrant": self.qdrant}


def _erase_faces(
    stores: Connection,
    faces: Sequence[FaceDoc],
    counts: Counts,
    *,
    collections: Sequence[Vectors] | None = None,
    tombstone: bool = True,
) -> None:
    """Remove faces from MongoDB and from every collection of every version (`collections`, when the
    caller opened them already; tombstoned unless told not to); mend the clusters they leave."""
    meta = stores.meta
    ids = [f["_id"] for f in faces]
    # Tombstones first (one per face, keyed by it: a retry writes the same ones), so an ingest racing an
    # erasure that stopped half-way can never store the face again.
    stamp = now()
    tombstones = [
        {"_id": f["_id"], "library": f["library"], "image": f["image"], "bbox": f.get("bbox"), "at": stamp}
        for f in faces
        if tombstone
    ]
    meta.add_tombstones(tombstones)
    counts.add(counts.mongodb, "tombstones", len(tombstones))
    for collection in collections if collections is not None else stores.every_version("faces"):
        counts.add(counts.qdrant, "face_points", collection.delete(ids))
    counts.add(counts.mongodb, "faces", meta.delete_faces(ids))
    gone = mend_clusters(meta, stores.vectors, {str(f["cluster_id"]) for f in faces if f.get("cluster_id")})
    counts.add(counts.mongodb, "clusters", gone)


def _audit(meta: MetaStore, library: str, actor: str, action: str, target: str, counts: Counts) -> str:
    faces = counts.mongodb.get("faces", 0)
    # an erasure is never undone
    entry = audit_entry(library, actor, action, target, details=counts.to_dict(), faces=faces, undone_by="erasure")
    meta.record_audit(entry)
    return entry["_id"]


def erase(
    stores: Connection,
    *,
    actor: str,
    face_id: str | None = None,
    library: str | None = None,
    image: str | None = None,
    person_id: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """Erase one face, one photo (`library` + `image`), one person or one user's profile, holding the
    library's lock; the counts per store."""
    meta = stores.meta
    where = library
    if face_id is not None and (face := meta.face(face_id)) is not None:
        where = face.get("library")
    elif person_id is not None and (person := meta.person(person_id)) is not None:
        where = person.get("library")
    with meta.library_lock(where) if where is not None else nullcontext():
        return _erase(stores, actor, face_id, library, image, person_id, user_id)


def _erase(
    stores: Connection,
    actor: str,
    face_id: str | None,
    library: str | None,
    image: str | None,
    person_id: str | None,
    user_id: str | None,
) -> dict[str, Any]:
    given = [face_id is not None, image is not None, person_id is not None, user_id is not None]
    if sum(given) != 1:
        raise InvalidInput("name exactly one of: a face id, a photo (with its library), a person id, a user id")
    meta, counts = stores.meta, Counts()
    if face_id is not None:
        face = meta.face(face_id)
        if face is None:
            raise NotFound(f"face {face_id} not found")
        where, scope, target = str(face["library"]), "face", face_id
        _erase_faces(stores, [face], counts)
    elif image is not None:
        if library is None:
            raise InvalidInput("a photo is named by its library and its key")
        faces = meta.faces_of_image(library, image)
        if not faces and not meta.images_by_key(library, [image]):
            raise NotFound(f"photo {image} not found in library {library}")
        where, scope, target = library, "image", image
        _erase_faces(stores, faces, counts, tombstone=False)
        meta.add_tombstones([{"_id": str(uuid.uuid4()), "library": library, "image": image, "bbox": None, "at": now()}])
        counts.add(counts.mongodb, "tombstones", 1)
        counts.add(counts.mongodb, "images", meta.delete_image(library, image))
    elif person_id is not None:
        person = meta.person(person_id)
        if person is None:
            raise NotFound(f"person {person_id} not found")
        where, scope, target = str(person["library"]), "person", person_id
        _erase_faces(stores, meta.faces_in(where, person_id=person_id), counts)
        meta.put_person(person_id, None)
        counts.add(counts.mongodb, "persons", 1)
        counts.add(
            counts.mongodb, "audit_redacted", meta.redact_audit(where, person_id, str(person.get("name")), ERASED)
        )
    else:
        assert user_id is not None
        if meta.profile(user_id) is None and not meta.assignments(user_id=user_id):
            raise NotFound(f"user {user_id} has no profile and no assignments")
        where, scope, target = "", "user", user_id
        for collection in stores.every_version("profiles"):
            counts.add(counts.qdrant, "profile_points", collection.delete([point_id(user_id)]))
        counts.add(counts.mongodb, "profiles", int(meta.profile(user_id) is not None))
        meta.put_profile(user_id, None)
        counts.add(counts.mongodb, "assignments", meta.delete_assignments(user_id=user_id))
    audit_id = _audit(meta, where, actor, f"erase_{scope}", target, counts)
    return {"erased": scope, "target": target, "audit_id": audit_id, **counts.to_dict()}


def remove_images(stores: Connection, library: str, listed: set[str]) -> tuple[int, int]:
    """Photos of `library` that are not `listed` in its source any more leave the library with their faces
    (no tombstone: a photo that comes back is ingested again); how many photos and faces went."""
    gone = sorted({str(doc["key"]) for doc in stores.meta.images(library)} - listed)
    counts = Counts()
    collections = stores.every_version("faces") if gone else []  # opened once for every photo that goes
    for key in gone:
        _erase_faces(stores, stores.meta.faces_of_image(library, key), counts, collections=collections, tombstone=False)
        counts.add(counts.mongodb, "images", stores.meta.delete_image(library, key))
    return counts.mongodb.get("images", 0), counts.mongodb.get("faces", 0)


def delete_library(stores: Connection, library: str, *, actor: str) -> dict[str, Any]:
    """Remove a whole library: photos, faces, vectors of every version, persons, clusters, runs, assignments.
    The audit stays (with an entry for this deletion)."""
    counts = Counts()
    interval_s = stores.settings.ingest.progress_interval_s
    with stores.meta.library_lock(library), Progress(f"delete library {library}", interval_s) as progress:
        for collection in stores.every_version("faces"):
            progress.step("deleting face vectors")
            counts.add(counts.qdrant, "face_points", collection.delete_library(library))
        progress.step("deleting photos, faces, persons, clusters and runs")
        for name, count in stores.meta.delete_library(library).items():
            counts.add(counts.mongodb, name, count)
    audit_id = _audit(stores.meta, library, actor, "delete_library", library, counts)
    return {"library": library, "audit_id": audit_id, **counts.to_dict()}


def cleanup_clustering(
    stores: Connection,
    library: str,
    *,
    clustering_id: str | None = None,
    assignments: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Undo one clustering run of a library (default: the latest): its clusters go, their faces become
    unclustered, the machine's person labels go when it is the latest run, and (with `assignments`) the
    run's cluster→user assignments. Ingested faces and human labels are never touched; the vectors hold no
    labels, so Qdrant has nothing to undo. `dry_run` only counts."""
    meta = stores.meta
    run = meta.run(clustering_id, library) if clustering_id else meta.latest_run(library)
    if run is None:
        missing = f"clustering {clustering_id}" if clustering_id else "no clustering run"
        raise NotFound(f"{missing} in library {library}")
    latest = meta.latest_run(library)
    clusters = [c["_id"] for c in meta.clusters(library) if c.get("run_id") == run["_id"]]
    members = meta.clustered_faces(library, clusters) if clusters else []
    is_latest = latest is not None and latest["_id"] == run["_id"]
    faces = meta.faces_in(library, ["label_source", "person_id", "cluster_id"]) if is_latest else []
    auto = [f for f in faces if f.get("label_source") == "auto"]
    states: dict[str, dict[str, Any]] = {f["_id"]: {"cluster_id": None} for f in members}
    for face in auto:
        states.setdefault(face["_id"], {}).update(person_id=None, label_source=None, person_similarity=None)
    removed = {
        "clusters": len(clusters),
        "faces_unclustered": len(members),
        "auto_labels": len(auto),
        "assignments": len(meta.assignments(clustering_id=run["_id"])) if assignments else 0,
    }
    if dry_run:
        return {"library": library, "clustering_id": run["_id"], "dry_run": dry_run, "removed": removed}
    with meta.library_lock(library):
        meta.update_faces(list(states.items()))
        for cluster_id in clusters:
            meta.put_cluster(cluster_id, None)
        if assignments:
            meta.delete_assignments(clustering_id=run["_id"])
    return {"library": library, "clustering_id": run["_id"], "dry_run": dry_run, "removed": removed}
