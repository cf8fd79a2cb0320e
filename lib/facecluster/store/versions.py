"""Which vector version is active, in MongoDB's `versions` collection, and the vectors of a trained one.

Per embedder version one pointer document `active:<base>` names the active version and the
previous one; switching rewrites that single document, so every reader sees the old version or
the new one, never a mix. Version documents hold the head's weights (kilobytes), so any node of a
cluster can load the active version without a shared filesystem (base64: any MongoDB-wire server
takes a string).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.engine.projection import VectorSpace, space_from_doc, weights_to_bytes
from facecluster.errors import Conflict, NotFound
from facecluster.store.meta import Doc, MetaStore, now
from facecluster.store.vectors import Hit, Vectors


class NotEnoughLabels(Conflict):
    """Too few labelled persons (with enough faces) to train and validate a new version."""


class VersionNotFound(NotFound):
    """A version id that was never trained, or a rollback with nothing to return to."""


def _pointer(base: str) -> str:
    return f"active:{base}"


def active_version(meta: MetaStore, base: str) -> str:
    """The id of the active version of the embedder version `base`: `base` until a head is switched in."""
    pointer = meta.call(lambda: meta.db.versions.find_one({"_id": _pointer(base)}))
    return base if pointer is None else str(pointer["version"])


def active_space(meta: MetaStore, base: str, dim: int) -> VectorSpace:
    version = active_version(meta, base)
    return VectorSpace(base, base, dim) if version == base else load_space(meta, version)


def load_space(meta: MetaStore, version: str) -> VectorSpace:
    doc = meta.call(lambda: meta.db.versions.find_one({"_id": version}))
    if doc is None:
        raise VersionNotFound(f"no vector version {version!r}")
    return space_from_doc(doc)


def record_space(meta: MetaStore, space: VectorSpace, details: Doc) -> None:
    """Store a trained version (weights and what it was trained on); not yet active."""
    if space.weights is None:
        raise ValueError("only trained versions are recorded")
    doc: Doc = {
        "_id": space.id,
        "base": space.base,
        "dim": space.dim,
        "weights": base64.b64encode(weights_to_bytes(space.weights)).decode("ascii"),
        "created_at": now(),
        **details,
    }
    meta.call(lambda: meta.db.versions.replace_one({"_id": space.id}, doc, upsert=True))


def switch_space(meta: MetaStore, base: str, version: str) -> str:
    """Make `version` the active one of `base` in one write; returns the version it replaced."""
    pointer = _pointer(base)
    current = meta.call(lambda: meta.db.versions.find_one({"_id": pointer}))
    previous = base if current is None else str(current["version"])
    update = {"version": version, "previous": previous, "switched_at": now()}
    meta.call(lambda: meta.db.versions.update_one({"_id": pointer}, {"$set": update}, upsert=True))
    return previous


def previous_version(meta: MetaStore, base: str) -> str:
    """The version a rollback returns to."""
    current = meta.call(lambda: meta.db.versions.find_one({"_id": _pointer(base)}))
    if current is None:
        raise VersionNotFound(f"nothing to roll back: {base} has never switched versions")
    return str(current["previous"])


def trained_versions(meta: MetaStore, base: str) -> list[str]:
    """Every trained version of `base`, active or not: each has collections of its own."""
    return [str(doc["_id"]) for doc in meta.find("versions", {"base": base}, ["_id"])]


def list_versions(meta: MetaStore, base: str) -> list[Doc]:
    """Trained versions of `base`, newest first, without their weights."""
    return meta.call(
        lambda: list(meta.db.versions.find({"base": base}, {"weights": 0}).sort("created_at", -1).limit(100))
    )


class VersionedVectors:
    """`Vectors` while a trained version is active: embedder output goes to the base collection as it
    is and to the active one through the head; reads and searches are in the active space."""

    def __init__(self, base: Vectors, active: Vectors, space: VectorSpace) -> None:
        self.base = base
        self.active = active
        self.space = space

    def ensure_collection(self) -> None:
        self.base.ensure_collection()
        self.active.ensure_collection()

    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32], payloads: Sequence[dict[str, Any]]) -> None:
        self.base.upsert(ids, vectors, payloads)
        self.active.upsert(ids, self.space.project(vectors), payloads)

    def delete(self, ids: Sequence[str]) -> int:
        return self.base.delete(ids) + self.active.delete(ids)

    def ids(self, library: str | None = None) -> set[str]:
        """Faces with both vectors; one missing either is missing for `check`."""
        return self.base.ids(library) & self.active.ids(library)

    def count(self) -> int:
        return self.active.count()

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        return self.active.fetch(ids)

    def search(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None, payload: bool = True
    ) -> list[list[Hit]]:
        return self.active.search(queries, limit, library, payload=payload)

    def delete_library(self, library: str) -> int:
        return self.base.delete_library(library) + self.active.delete_library(library)
