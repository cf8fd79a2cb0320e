"""Metadata in MongoDB: images, faces, clusters, runs, locks and jobs, with persons, audit, profiles and
assignments from their own modules; `MetaStore` is the one object the rest of the code talks to."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from pymongo import ASCENDING, DeleteOne, ReplaceOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from facecluster.errors import Conflict
from facecluster.store.documents import ClusterDoc, FaceDoc, ImageDoc, JobDoc, RunDoc
from facecluster.store.mongo import Doc, MongoCollections, now
from facecluster.store.people import PeopleDocs
from facecluster.store.profiles import ProfileDocs

__all__ = ["FINAL_STATES", "INSPECTABLE", "Busy", "Doc", "MetaStore", "now"]

#: Image states after ingest; `done` and `no_face` are final for an unchanged image and models.
FINAL_STATES = ("done", "no_face")
#: What a library holds; deleting it removes these (its audit and job records stay).
LIBRARY_CONTENT = ("images", "faces", "clusters", "runs", "assignments", "persons")
INSPECTABLE = (*LIBRARY_CONTENT, "audit", "jobs", "profiles", "erasures")
#: Faces `iter_faces` reads a query at a time.
FACE_PAGE = 50_000


class Busy(Conflict):
    """A named lock that another process holds."""


@dataclass
class IdentityCounts:
    """What a library's statistics are made of (`MetaStore.identity_counts`)."""

    sizes: dict[str, int] = field(default_factory=dict)  # faces per person or cluster
    sources: dict[str | None, int] = field(default_factory=dict)  # faces with a person, per label source
    unclustered: int = 0
    multi_identity_photos: int = 0


#: Ids in one `$in` query: the embedded MongoDB-wire server answers it from its `_id` index.
ID_CHUNK = 5_000
#: What a clustering run reads of a face, full or incremental.
RUN_FIELDS = ("image", "quality", "person_id", "label_source", "rejected_persons", "cluster_id", "pending")


class MetaStore(PeopleDocs, ProfileDocs, MongoCollections):
    """Every MongoDB collection of facecluster, through named methods."""

    def ensure_indexes(self) -> None:
        def create() -> None:
            self.db.images.create_index([("library", ASCENDING), ("key", ASCENDING)], unique=True)
            self.db.images.create_index([("library", ASCENDING), ("status", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("image", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("person_id", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("cluster_id", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("pending", ASCENDING)])
            self.db.jobs.create_index([("library", ASCENDING), ("started_at", ASCENDING)])
            self.db.clusters.create_index([("library", ASCENDING), ("size", ASCENDING)])
            self.db.runs.create_index([("library", ASCENDING), ("started_at", ASCENDING)])
            self.db.persons.create_index([("library", ASCENDING), ("name", ASCENDING)])
            self.db.assignments.create_index([("library", ASCENDING), ("clustering_id", ASCENDING)])
            self.db.assignments.create_index([("user_id", ASCENDING)])
            self.db.audit.create_index([("library", ASCENDING), ("at", ASCENDING)])

        self.call(create)

    def libraries(self) -> list[str]:
        """Every library with stored photos."""
        return sorted(self.call(lambda: self.db.images.distinct("library")))

    def delete_library(self, library: str) -> dict[str, int]:
        """Remove every document of `library` from every collection; the counts per collection."""
        return {name: self.delete(name, {"library": library}) for name in LIBRARY_CONTENT}

    # Images.
    def images_by_key(self, library: str, keys: Sequence[str]) -> dict[str, ImageDoc]:
        query = {"library": library, "key": {"$in": list(keys)}}
        return {doc["key"]: cast(ImageDoc, doc) for doc in self.call(lambda: list(self.db.images.find(query)))}

    def write_images(self, docs: Iterable[Doc]) -> None:
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]
        if operations:
            self.call(lambda: self.db.images.bulk_write(operations, ordered=False))

    def image_counts(self, library: str) -> dict[str, int]:
        pipeline: list[Doc] = [{"$match": {"library": library}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self.call(lambda: list(self.db.images.aggregate(pipeline)))}

    # Faces.
    def faces_of_images(self, library: str, keys: Sequence[str]) -> list[FaceDoc]:
        query = {"library": library, "image": {"$in": list(keys)}}
        fields = ["image", "bbox", "person_id", "cluster_id", "label_source", "rejected_persons", "person_similarity"]
        return cast(list[FaceDoc], self.find("faces", query, fields))

    def write_faces(self, docs: Iterable[Doc]) -> None:
        """Upsert faces as given (labels included); a face keeps when it was first stored."""
        operations = [
            UpdateOne({"_id": doc["_id"]}, {"$set": doc, "$setOnInsert": {"created_at": now()}}, upsert=True)
            for doc in docs
        ]
        if operations:
            self.call(lambda: self.db.faces.bulk_write(operations, ordered=False))

    def mark_not_redetected(self, ids: Sequence[str]) -> None:
        """Faces with human work that the last processing of their photo did not find again: kept, marked."""
        if ids:
            update = {"$set": {"redetected": False}}
            self.call(lambda: self.db.faces.update_many({"_id": {"$in": list(ids)}}, update))

    def faces_of_image(self, library: str, image: str) -> list[FaceDoc]:
        return cast(list[FaceDoc], self.find("faces", {"library": library, "image": image}))

    def delete_image(self, library: str, image: str) -> int:
        return self.delete("images", {"library": library, "key": image})

    # Tombstones of erased faces: photo and box, no biometric data.
    def add_tombstones(self, docs: Sequence[Doc]) -> None:
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]
        if operations:
            self.call(lambda: self.db.erasures.bulk_write(operations, ordered=False))

    def tombstones(self, library: str, images: Sequence[str]) -> dict[str, list[list[float] | None]]:
        """Per photo, the boxes of faces erased from it (None: the whole photo was erased)."""
        found: dict[str, list[list[float] | None]] = {}
        for doc in self.find("erasures", {"library": library, "image": {"$in": list(images)}}, ["image", "bbox"]):
            found.setdefault(doc["image"], []).append(doc.get("bbox"))
        return found

    def delete_faces(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return self.call(lambda: self.db.faces.delete_many({"_id": {"$in": list(ids)}}).deleted_count)

    def face_ids(self, library: str | None = None) -> set[str]:
        query = {} if library is None else {"library": library}
        return {doc["_id"] for doc in self.call(lambda: list(self.db.faces.find(query, {"_id": 1})))}

    def iter_faces(self, library: str, fields: Sequence[str] | None = None) -> Iterator[FaceDoc]:
        """A library's faces (only `fields`, when given) in the order they are stored, `FACE_PAGE` at a time:
        a library of a million faces is never one list, here or in the server (the embedded MongoDB-wire
        server holds a query's whole answer, and filters an `_id` range in Python, a scan a page; it runs
        a position in SQL). Each page starts at the last face of the one before; when that face has moved
        (faces before it were deleted meanwhile) the read steps back a page and passes over the faces it
        has read, so none is missed or read twice."""
        projection = None if fields is None else dict.fromkeys(fields, 1)

        def page_at(start: int) -> list[FaceDoc]:
            found = self.db.faces.find({"library": library}, projection).skip(start).limit(FACE_PAGE)
            return cast(list[FaceDoc], list(found))

        seen: set[str] = set()
        start = 0
        while True:
            page = self.call(partial(page_at, start))
            if start and (not page or page[0]["_id"] not in seen):
                start = max(0, start - FACE_PAGE)
                continue
            for doc in page:
                if doc["_id"] not in seen:
                    seen.add(doc["_id"])
                    yield doc
            if len(page) < FACE_PAGE:
                return
            start += len(page) - 1

    def faces_by_id(self, ids: Sequence[str], fields: Sequence[str] | None = None) -> list[FaceDoc]:
        """The faces of `ids` that are stored (only `fields` where given), `ID_CHUNK` ids a query."""
        found: list[Doc] = []
        for start in range(0, len(ids), ID_CHUNK):
            found += self.find("faces", {"_id": {"$in": list(ids[start : start + ID_CHUNK])}}, fields)
        return cast(list[FaceDoc], found)

    def clustering_faces(self, library: str) -> Iterator[FaceDoc]:
        """What a clustering run reads of each face of a library, streamed and small (a million faces in
        about 300 MB): the quality score alone, in one `quality` document per score (scores have 4 places: at
        most 10,001 of them, never changed by a run), photo and label ids shared between faces, no empty field."""
        qualities: dict[float, dict[str, float]] = {}
        for doc in self.iter_faces(library, RUN_FIELDS):
            score = float(doc.get("quality", {}).get("score", 0.0))
            face: dict[str, Any] = {"_id": doc["_id"], "quality": qualities.setdefault(score, {"score": score})}
            for name in ("image", "person_id", "label_source", "cluster_id"):
                if (value := doc.get(name)) is not None:
                    face[name] = sys.intern(str(value))
            for name in ("rejected_persons", "pending"):
                if value := doc.get(name):
                    face[name] = value
            yield cast(FaceDoc, face)

    def pending_faces(self, library: str) -> list[FaceDoc]:
        """Faces stored since the last clustering run (`pending`), with what a run reads of them."""
        return cast(list[FaceDoc], self.find("faces", {"library": library, "pending": True}, RUN_FIELDS))

    def library_lock(self, library: str, ttl_s: float = 60.0) -> AbstractContextManager[None]:
        """The lock every change to a library's faces, persons or clusters holds (clustering runs,
        matching, assignment, curation, cleanup, erasure), so none undoes another's work."""
        holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        return self.locked(f"changes to {library}", holder, ttl_s)

    @contextmanager
    def locked(self, name: str, holder: str, ttl_s: float) -> Iterator[None]:
        """Hold the lock `name` (a `locks` document) for the block; `Busy` when another holder has it.
        A lock older than `ttl_s` (its holder crashed) is taken over."""
        started = time.time()  # epoch seconds: compared as numbers by every MongoDB-wire server
        fields = {"holder": holder, "since": now(), "expires": started + ttl_s}
        try:
            self.call(lambda: self.db.locks.insert_one({"_id": name, **fields}))
        except DuplicateKeyError:
            # Ours already when a retried insert had gone through; else taken over only when it lapsed.
            stale = {"_id": name, "$or": [{"expires": {"$lt": started}}, {"holder": holder}]}
            if self.call(lambda: self.db.locks.update_one(stale, {"$set": fields}).matched_count) != 1:
                held = self.call(lambda: self.db.locks.find_one({"_id": name})) or {}
                raise Busy(
                    f"{name} is in progress: held by {held.get('holder')} since {held.get('since')}, "
                    f"for at most {max(0.0, float(held.get('expires', started)) - started):.0f} s more"
                ) from None
        try:
            yield
        finally:
            self.call(lambda: self.db.locks.delete_one({"_id": name, "holder": holder}))

    def update_faces(self, updates: Sequence[tuple[str, Doc]]) -> None:
        """`$set` fields on faces: [(face id, fields), …] in one bulk write."""
        operations = [UpdateOne({"_id": face}, {"$set": fields}) for face, fields in updates]
        if operations:
            self.call(lambda: self.db.faces.bulk_write(operations, ordered=False))

    def replace_clusters(self, library: str, docs: Sequence[Doc], keep: Mapping[str, int] | None = None) -> None:
        """The library's clusters become `docs`, and the clusters in `keep` (id → faces it still has), which
        a run left alone because some of their faces were outside its limits."""
        keep = keep or {}
        operations: list[ReplaceOne[Doc] | UpdateOne] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
        operations += [UpdateOne({"_id": cluster}, {"$set": {"size": size}}) for cluster, size in keep.items()]
        if operations:
            self.call(lambda: self.db.clusters.bulk_write(operations, ordered=False))
        current = [doc["_id"] for doc in docs] + list(keep)
        self.call(lambda: self.db.clusters.delete_many({"library": library, "_id": {"$nin": current}}))

    def unclustered_again(self, library: str) -> None:
        """Every face of `library` out of its cluster and pending, its clusters gone: a library as an ingest
        left it (benchmarks start each clustering run from there)."""
        self.call(
            lambda: self.db.faces.update_many({"library": library}, {"$set": {"cluster_id": None, "pending": True}})
        )
        self.delete("clusters", {"library": library})

    def record_run(self, doc: Doc) -> None:
        self.call(lambda: self.db.runs.insert_one(doc))

    def finish_run(self, run_id: str, fields: Doc) -> None:
        self.call(lambda: self.db.runs.update_one({"_id": run_id}, {"$set": fields}))

    def unfinished_runs(self, library: str) -> list[RunDoc]:
        """Incremental runs of the library that were recorded as started and never finished (interrupted)."""
        return cast(list[RunDoc], self.find("runs", {"library": library, "incremental": True, "finished_at": None}))

    # Jobs.
    def start_job(self, job_id: str, kind: str, library: str, source: str, options: Doc) -> None:
        """Record a job as running (a queued one keeps when it was queued)."""
        doc = {"kind": kind, "library": library, "source": source, "options": options, "status": "running"}
        update = {"$set": {**doc, "started_at": now()}}
        self.call(lambda: self.db.jobs.update_one({"_id": job_id}, update, upsert=True))

    def queue_job(self, job_id: str, kind: str, library: str, options: Doc) -> None:
        doc = {"_id": job_id, "kind": kind, "library": library, "options": options, "status": "queued"}
        self.call(lambda: self.db.jobs.replace_one({"_id": job_id}, {**doc, "queued_at": now()}, upsert=True))

    def finish_job(self, job_id: str, status: str, result: Doc) -> None:
        update = {"$set": {"status": status, "finished_at": now(), "result": result}}
        self.call(lambda: self.db.jobs.update_one({"_id": job_id}, update))

    def job_progress(self, job_id: str, text: str) -> None:
        update = {"$set": {"progress": text, "progress_at": now()}}
        self.call(lambda: self.db.jobs.update_one({"_id": job_id}, update))

    def job(self, job_id: str) -> JobDoc | None:
        return cast("JobDoc | None", self.find_one("jobs", {"_id": job_id}))

    # Faces, as the rest of the code reads them.
    @staticmethod
    def _face_query(
        library: str | None,
        ids: Sequence[str] | None = None,
        person_id: str | None = None,
        cluster_id: str | None = None,
    ) -> Doc:
        query: Doc = {} if library is None else {"library": library}
        if ids is not None:
            query["_id"] = {"$in": list(ids)}
        if person_id is not None:
            query["person_id"] = person_id
        if cluster_id is not None:
            query["cluster_id"] = cluster_id
        return query

    def face(self, face_id: str, library: str | None = None) -> FaceDoc | None:
        return cast("FaceDoc | None", self.find_one("faces", self._face_query(library, [face_id])))

    def faces_in(
        self,
        library: str | None,
        fields: Sequence[str] | None = None,
        *,
        ids: Sequence[str] | None = None,
        person_id: str | None = None,
        cluster_id: str | None = None,
        best_first: bool = False,
        skip: int = 0,
        limit: int = 0,
    ) -> list[FaceDoc]:
        """Faces of a library (or of all), narrowed by ids, person or cluster; best quality first when asked."""
        query = self._face_query(library, ids, person_id, cluster_id)
        sort = [("quality.score", -1), ("_id", 1)] if best_first else [("_id", 1)]
        return cast(list[FaceDoc], self.find("faces", query, fields, sort=sort, skip=skip, limit=limit))

    def count_faces(self, library: str | None, *, person_id: str | None = None, cluster_id: str | None = None) -> int:
        return self.count("faces", self._face_query(library, None, person_id, cluster_id))

    def face_images(self, library: str, *, person_id: str | None = None, cluster_id: str | None = None) -> list[str]:
        """The photos with a face of this person or cluster."""
        query = self._face_query(library, None, person_id, cluster_id)
        return sorted(self.call(lambda: self.db.faces.distinct("image", query)))

    def person_face_counts(self, library: str) -> dict[str, int]:
        pipeline: list[Doc] = [
            {"$match": {"library": library, "person_id": {"$ne": None}}},
            {"$group": {"_id": "$person_id", "n": {"$sum": 1}}},
        ]
        return {row["_id"]: int(row["n"]) for row in self.call(lambda: list(self.db.faces.aggregate(pipeline)))}

    def _aggregate(self, pipeline: list[Doc]) -> list[Doc]:
        rows: list[Doc] = self.call(lambda: list(self.db.faces.aggregate(pipeline)))
        return rows

    def identity_counts(self, library: str | None) -> IdentityCounts:
        """Faces per identity (a face counts for its person, else for its cluster), faces in none, faces named
        by people and by the machine, and photos showing more than one identity: in queries simple enough for
        the embedded MongoDB-wire server to run in SQL, each a scan at most, and no face loaded but the named."""
        counts = IdentityCounts()
        photos: dict[tuple[str, str], set[str]] = {}
        named = {**self._face_query(library), "person_id": {"$ne": None}}
        for face in self.call(lambda: self.db.faces.find(named, ["library", "image", "person_id", "label_source"])):
            counts.sizes[face["person_id"]] = counts.sizes.get(face["person_id"], 0) + 1
            counts.sources[face.get("label_source")] = counts.sources.get(face.get("label_source"), 0) + 1
            photos.setdefault((face["library"], face["image"]), set()).add(face["person_id"])
        # Per library, one row per photo with its faces without a person and their clusters: streamed, never
        # held, and one scan for the cluster sizes, the unclustered faces and the photos' identities.
        unnamed = {**self._face_query(library), "person_id": None}
        for name in [library] if library is not None else self.call(lambda: self.db.faces.distinct("library")):
            pipeline: list[Doc] = [
                {"$match": {**unnamed, "library": name}},
                {"$group": {"_id": "$image", "faces": {"$sum": 1}, "clusters": {"$push": "$cluster_id"}}},
            ]
            for row in self.call(lambda p=pipeline: self.db.faces.aggregate(p, batchSize=10_000)):  # type: ignore[misc]
                clusters = [str(c) for c in row["clusters"] if c is not None]
                counts.unclustered += int(row["faces"]) - len(clusters)
                for cluster in clusters:
                    counts.sizes[cluster] = counts.sizes.get(cluster, 0) + 1
                photo = (name, str(row["_id"]))
                if photo in photos:
                    photos[photo].update(clusters)
                else:
                    counts.multi_identity_photos += len(set(clusters)) > 1
        counts.multi_identity_photos += sum(1 for who in photos.values() if len(who) > 1)
        return counts

    def unlabelled_faces(self, library: str, limit: int | None = None) -> list[FaceDoc]:
        """Faces with neither a person nor a cluster, best quality first."""
        query = {"library": library, "person_id": None, "cluster_id": None}
        return cast(
            list[FaceDoc], self.find("faces", query, sort=[("quality.score", -1), ("_id", 1)], limit=limit or 0)
        )

    def human_labelled_faces(self, library: str | None, persons: Sequence[str] | None = None) -> list[FaceDoc]:
        """Faces a person named (`label_source: human`), of one library or of all, of `persons` when given, in
        id order."""
        named: Doc = {"$ne": None} if persons is None else {"$in": list(persons)}
        query: Doc = {"label_source": "human", "person_id": named}
        if library is not None:
            query["library"] = library
        return cast(list[FaceDoc], self.find("faces", query, ["person_id"], sort=[("_id", 1)]))

    def clustered_faces(
        self,
        library: str,
        cluster_ids: Sequence[str] | None = None,
        limit: int = 0,
        fields: Sequence[str] = ("cluster_id",),
    ) -> list[FaceDoc]:
        """Faces in a cluster (in one of `cluster_ids` when given), in id order: their ids and `fields`."""
        members: Doc = {"$ne": None} if cluster_ids is None else {"$in": list(cluster_ids)}
        query = {"library": library, "cluster_id": members}
        return cast(list[FaceDoc], self.find("faces", query, list(fields), sort=[("_id", 1)], limit=limit))

    def cluster_photos(self, library: str, cluster_ids: Sequence[str]) -> dict[str, set[str]]:
        """The photos of each of `cluster_ids`, grouped by the server: one row a cluster, not one a face (on
        the embedded MongoDB-wire server, one scan of the library in SQL for any number of clusters)."""
        photos: dict[str, set[str]] = {str(c): set() for c in cluster_ids}
        if not photos:
            return photos
        pipeline: list[Doc] = [
            {"$match": {"library": library, "cluster_id": {"$in": sorted(photos)}}},
            {"$group": {"_id": "$cluster_id", "images": {"$addToSet": "$image"}}},
        ]
        for row in self.call(lambda: self.db.faces.aggregate(pipeline, batchSize=10_000)):
            photos[str(row["_id"])] = {str(image) for image in row["images"]}
        return photos

    def images(self, library: str, status: str | None = None) -> list[ImageDoc]:
        query = {"library": library} if status is None else {"library": library, "status": status}
        return cast(list[ImageDoc], self.find("images", query))

    def owner_library(self, collection: str, key: str) -> str | None:
        """The library a face, person, cluster or audit entry belongs to; None when there is no such document."""
        doc = self.find_one(collection, {"_id": key}, ["library"])
        return None if doc is None else str(doc["library"])

    # Clusters and runs.
    def cluster(self, cluster_id: str, library: str | None = None, *, centroid: bool = True) -> ClusterDoc | None:
        query: Doc = {"_id": cluster_id} if library is None else {"_id": cluster_id, "library": library}
        doc = self.find_one("clusters", query)
        if doc is not None and not centroid:
            doc.pop("centroid", None)
        return cast("ClusterDoc | None", doc)

    def clusters(self, library: str) -> list[ClusterDoc]:
        """A library's clusters in id order, with their centroids."""
        return cast(list[ClusterDoc], self.find("clusters", {"library": library}, sort=[("_id", 1)]))

    def clusters_page(self, library: str | None, *, skip: int, limit: int) -> tuple[int, list[ClusterDoc]]:
        """Clusters (of one library or all), largest first, without centroids, and how many there are."""
        query: Doc = {} if library is None else {"library": library}
        found = self.find("clusters", query, sort=[("size", -1), ("_id", 1)], skip=skip, limit=limit)
        for doc in found:
            doc.pop("centroid", None)
        return self.count("clusters", query), cast(list[ClusterDoc], found)

    def clusters_by_id(self, cluster_ids: Sequence[str]) -> list[ClusterDoc]:
        """The clusters of `cluster_ids` that exist, with their centroids."""
        if not cluster_ids:
            return []
        return cast(list[ClusterDoc], self.find("clusters", {"_id": {"$in": list(cluster_ids)}}))

    def write_clusters(self, docs: Sequence[Doc], gone: Sequence[str] = ()) -> None:
        """Replace (or insert) the clusters `docs` and delete the clusters `gone`, in one bulk write."""
        operations: list[ReplaceOne[Doc] | DeleteOne] = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
        operations += [DeleteOne({"_id": cluster_id}) for cluster_id in gone]
        if operations:
            self.call(lambda: self.db.clusters.bulk_write(operations, ordered=False))

    def put_cluster(self, cluster_id: str, doc: Mapping[str, Any] | None) -> None:
        self.put("clusters", cluster_id, doc)

    def recount_clusters(self, cluster_ids: Iterable[str]) -> None:
        """Set clusters' sizes to the faces they hold now (a count, not an increment: safe to retry), counted in
        one pass over the faces (a count per cluster is a scan of every face on the embedded server)."""
        wanted = sorted(set(cluster_ids))
        if not wanted:
            return
        pipeline: list[Doc] = [
            {"$match": {"cluster_id": {"$in": wanted}}},
            {"$group": {"_id": "$cluster_id", "n": {"$sum": 1}}},
        ]
        sizes = {row["_id"]: int(row["n"]) for row in self._aggregate(pipeline)}
        operations = [UpdateOne({"_id": cluster}, {"$set": {"size": sizes.get(cluster, 0)}}) for cluster in wanted]
        if operations:
            self.call(lambda: self.db.clusters.bulk_write(operations, ordered=False))

    def run(self, run_id: str, library: str | None = None) -> RunDoc | None:
        return cast(
            "RunDoc | None",
            self.find_one("runs", {"_id": run_id} if library is None else {"_id": run_id, "library": library}),
        )

    def runs(self, library: str, limit: int = 50, *, by: str = "started_at") -> list[RunDoc]:
        """A library's clustering runs, newest first by `by`."""
        return cast(list[RunDoc], self.find("runs", {"library": library}, sort=[(by, -1)], limit=limit))

    def latest_run(self, library: str, *, by: str = "started_at") -> RunDoc | None:
        found = self.runs(library, 1, by=by)
        return found[0] if found else None

    def jobs_of(self, library: str, limit: int = 20, *, kind: str | None = None) -> list[JobDoc]:
        query = {"library": library} if kind is None else {"library": library, "kind": kind}
        return cast(list[JobDoc], self.find("jobs", query, sort=[("started_at", -1)], limit=limit))

    # What the debug routes show.
    def collection_counts(self) -> dict[str, int]:
        return {name: int(self.call(self.db[name].estimated_document_count)) for name in INSPECTABLE}

    def collection_sample(self, collection: str) -> Doc | None:
        """One document of `collection` without vectors or audit states."""
        if collection not in INSPECTABLE:
            raise ValueError(f"{collection} is not one of {', '.join(INSPECTABLE)}")
        hidden = {"embedding": 0, "template": 0, "centroid": 0, "before": 0, "after": 0}
        sample = self.call(lambda: self.db[collection].find_one({}, hidden))
        if sample and isinstance(sample.get("faces"), list):  # a profile's enrolment vectors (nested)
            sample["faces"] = [{k: v for k, v in face.items() if k != "embedding"} for face in sample["faces"]]
        return sample
