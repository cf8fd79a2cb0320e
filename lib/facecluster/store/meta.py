"""Metadata in MongoDB: `images`, `faces` and `jobs`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pymongo import ASCENDING, MongoClient, ReplaceOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)

from facecluster.errors import Conflict
from facecluster.store.backoff import with_retries

T = TypeVar("T")
Doc = dict[str, Any]

#: Image states after ingest; `done` and `no_face` are final for an unchanged image and models.
FINAL_STATES = ("done", "no_face")
_TRANSIENT = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Busy(Conflict):
    """A named lock that another process holds."""


class MetaStore:
    """The three collections of one database, every call retried on connection errors."""

    def __init__(self, uri: str, database: str, *, attempts: int = 5, timeout_ms: int = 5000) -> None:
        self.uri = uri
        self.client: MongoClient[Doc] = MongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
        )
        self.db: Database[Doc] = self.client[database]
        self.attempts = attempts

    def call(self, call: Callable[[], T]) -> T:
        """`call()`, retried with backoff on connection errors."""
        return with_retries(call, backend=f"MongoDB at {self._host()}", attempts=self.attempts, retry_on=_TRANSIENT)

    def _host(self) -> str:
        return self.uri.split("@")[-1].split("/")[2] if "://" in self.uri else self.uri

    def close(self) -> None:
        self.client.close()

    def ensure_indexes(self) -> None:
        def create() -> None:
            self.db.images.create_index([("library", ASCENDING), ("key", ASCENDING)], unique=True)
            self.db.images.create_index([("library", ASCENDING), ("status", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("image", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("person_id", ASCENDING)])
            self.db.faces.create_index([("library", ASCENDING), ("cluster_id", ASCENDING)])
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
        collections = ("images", "faces", "clusters", "runs", "assignments", "persons", "audit", "jobs")
        return {
            name: int(self.call(lambda name=name: self.db[name].delete_many({"library": library}).deleted_count))  # type: ignore[misc]
            for name in collections
        }

    # Images.
    def images_by_key(self, library: str, keys: Sequence[str]) -> dict[str, Doc]:
        query = {"library": library, "key": {"$in": list(keys)}}
        return {doc["key"]: doc for doc in self.call(lambda: list(self.db.images.find(query)))}

    def write_images(self, docs: Iterable[Doc]) -> None:
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]
        if operations:
            self.call(lambda: self.db.images.bulk_write(operations, ordered=False))

    def image_counts(self, library: str) -> dict[str, int]:
        pipeline: list[Doc] = [{"$match": {"library": library}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self.call(lambda: list(self.db.images.aggregate(pipeline)))}

    # Faces.
    def faces_of_images(self, library: str, keys: Sequence[str]) -> list[Doc]:
        query = {"library": library, "image": {"$in": list(keys)}}
        projection = {"_id": 1, "image": 1, "person_id": 1, "cluster_id": 1}
        return self.call(lambda: list(self.db.faces.find(query, projection)))

    def write_faces(self, docs: Iterable[Doc]) -> None:
        """Upsert faces; person and cluster ids of faces already stored are left as they are."""
        operations = [
            UpdateOne(
                {"_id": doc["_id"]},
                {"$set": doc, "$setOnInsert": {"person_id": None, "cluster_id": None, "created_at": now()}},
                upsert=True,
            )
            for doc in docs
        ]
        if operations:
            self.call(lambda: self.db.faces.bulk_write(operations, ordered=False))

    def delete_faces(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return self.call(lambda: self.db.faces.delete_many({"_id": {"$in": list(ids)}}).deleted_count)

    def face_ids(self, library: str | None = None) -> set[str]:
        query = {} if library is None else {"library": library}
        return {doc["_id"] for doc in self.call(lambda: list(self.db.faces.find(query, {"_id": 1})))}

    def iter_faces(self, library: str) -> Iterator[Doc]:
        yield from self.call(lambda: list(self.db.faces.find({"library": library}).sort("_id", ASCENDING)))

    def faces_by_id(self, ids: Sequence[str]) -> list[Doc]:
        return self.call(lambda: list(self.db.faces.find({"_id": {"$in": list(ids)}})))

    def clustering_faces(self, library: str) -> list[Doc]:
        projection = {
            "_id": 1, "image": 1, "quality": 1, "person_id": 1, "label_source": 1,
            "rejected_persons": 1, "cluster_id": 1,
        }  # fmt: skip
        return self.call(lambda: list(self.db.faces.find({"library": library}, projection).sort("_id", ASCENDING)))

    @contextmanager
    def locked(self, name: str, holder: str, ttl_s: float) -> Iterator[None]:
        """Hold the lock `name` (a `locks` document) for the block; `Busy` when another holder has it.
        A lock older than `ttl_s` (its holder crashed) is taken over."""
        started = time.time()  # epoch seconds: compared as numbers by every MongoDB-wire server
        fields = {"holder": holder, "since": now(), "expires": started + ttl_s}
        try:
            self.call(lambda: self.db.locks.insert_one({"_id": name, **fields}))
        except DuplicateKeyError:
            stale = {"_id": name, "expires": {"$lt": started}}
            if self.call(lambda: self.db.locks.update_one(stale, {"$set": fields}).modified_count) != 1:
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

    def replace_clusters(self, library: str, docs: Sequence[Doc]) -> None:
        """The library's clusters become exactly `docs`."""
        keep = [doc["_id"] for doc in docs]
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]
        if operations:
            self.call(lambda: self.db.clusters.bulk_write(operations, ordered=False))
        self.call(lambda: self.db.clusters.delete_many({"library": library, "_id": {"$nin": keep}}))

    def record_run(self, doc: Doc) -> None:
        self.call(lambda: self.db.runs.insert_one(doc))

    # Jobs.
    def start_job(self, job_id: str, kind: str, library: str, source: str, options: Doc) -> None:
        doc = {
            "_id": job_id,
            "kind": kind,
            "library": library,
            "source": source,
            "options": options,
            "status": "running",
            "started_at": now(),
        }
        self.call(lambda: self.db.jobs.replace_one({"_id": job_id}, doc, upsert=True))

    def finish_job(self, job_id: str, status: str, result: Doc) -> None:
        update = {"$set": {"status": status, "finished_at": now(), "result": result}}
        self.call(lambda: self.db.jobs.update_one({"_id": job_id}, update))
