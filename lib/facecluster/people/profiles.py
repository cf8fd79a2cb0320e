"""Profiles of known users: enrolment faces in MongoDB, one template vector in Qdrant.

A profile holds one or more enrolment faces; its template is their normalised mean, stored as a
point of the profiles collection so that matching is a vector search.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import numpy as np
from numpy.typing import NDArray

from facecluster.engine.analysis import FaceResult
from facecluster.engine.projection import VectorSpace, unit
from facecluster.errors import Conflict, NotFound
from facecluster.store.documents import ProfileDoc
from facecluster.store.meta import Doc, MetaStore, now
from facecluster.store.vectors import Vectors

#: A user id: e-mail-like names included (`test.user@demo`).
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+\-]{0,127}")
_NAMESPACE = uuid.UUID("5b0f3a3e-3c35-4c55-9d5e-1e9b8e0c2f61")


class ProfileExists(Conflict):
    """Creating a profile for a user that has one."""


class ProfileNotFound(NotFound):
    """A user without a profile."""


def point_id(user_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, user_id))


def public(doc: ProfileDoc) -> Doc:
    """A profile without vectors."""
    return {
        "user_id": doc["_id"],
        "faces": [{k: v for k, v in face.items() if k != "embedding"} for face in doc.get("faces", [])],
        "model_version": doc.get("model_version"),
        "created_at": doc.get("created_at"),
        "updated_at": doc.get("updated_at"),
    }


def template(space: VectorSpace, faces: list[Doc]) -> NDArray[np.float32]:
    """A profile's template in `space`: the normalised mean of its enrolment faces there."""
    raw = np.asarray([f["embedding"] for f in faces], dtype=np.float32)
    return unit(space.project(raw).sum(axis=0)).astype(np.float32)


class ProfileStore:
    """Profiles, their templates in `vectors`: the profiles collection of the active version `space`."""

    def __init__(self, meta: MetaStore, vectors: Vectors, space: VectorSpace) -> None:
        self.meta = meta
        self.vectors = vectors
        self.space = space
        self.model_version = space.base  # of the enrolment embeddings

    def reproject(self) -> int:
        """Every profile of this embedder: its template in this store's space, written to its collection."""
        docs = self.meta.profiles_of_model(self.model_version)
        for doc in docs:
            vector = template(self.space, doc["faces"])
            self.vectors.upsert(
                [point_id(doc["_id"])], vector[None, :], [{"user_id": doc["_id"], "faces": len(doc["faces"])}]
            )
        self.vectors.delete(sorted(self.vectors.ids() - {point_id(doc["_id"]) for doc in docs}))  # erased users
        return len(docs)

    def get(self, user_id: str) -> ProfileDoc:
        doc = self.meta.profile(user_id)
        if doc is None:
            raise ProfileNotFound(user_id)
        return doc

    def exists(self, user_id: str) -> bool:
        return self.meta.profile(user_id) is not None

    def page(self, skip: int = 0, limit: int = 100) -> list[ProfileDoc]:
        return self.meta.profiles_page(skip=skip, limit=limit)

    def count(self) -> int:
        return self.meta.profile_count()

    def enrol(self, user_id: str, face: FaceResult, image: bytes, *, create: bool, replace: bool = False) -> Doc:
        """Create (`create`) or extend an existing profile with `face` of the photo `image`;
        `replace` drops the earlier enrolment faces."""
        existing = self.meta.profile(user_id)
        if create and existing is not None:
            raise ProfileExists(user_id)
        if not create and existing is None:
            raise ProfileNotFound(user_id)
        digest = hashlib.sha256(image).hexdigest()
        entry = {
            "face_id": str(uuid.uuid5(_NAMESPACE, f"{user_id}/{digest}/{face.bbox}")),
            "image_sha256": digest,
            "bbox": face.bbox,
            "score": face.score,
            "quality": face.quality,
            "embedding": face.embedding,
            "model_version": self.model_version,
            "added_at": now(),
        }
        kept = [] if existing is None or replace else existing.get("faces", [])
        faces = [f for f in kept if f["face_id"] != entry["face_id"]] + [entry]
        vector = template(self.space, faces)
        doc: Doc = {
            "_id": user_id,
            "faces": faces,
            "template": vector.tolist(),
            "model_version": self.model_version,
            "created_at": existing["created_at"] if existing else now(),
            "updated_at": now(),
        }
        self.vectors.upsert([point_id(user_id)], vector[None, :], [{"user_id": user_id, "faces": len(faces)}])
        self.meta.put_profile(user_id, doc)
        return doc
