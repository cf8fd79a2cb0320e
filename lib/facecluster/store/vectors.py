"""Face vectors: the store's interface, its search hits and where a collection lives (one collection per
embedding model version). `store.qdrant` speaks to Qdrant; this module imports no client, so a process
that only holds an owner actor's handle or a protocol type stays light."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from facecluster.errors import Conflict


class MissingVectors(Conflict):
    """Faces stored in MongoDB whose vectors Qdrant lacks (`facecluster check --repair` mends them)."""


#: Payload fields every vector store indexes, and their kinds: the filters searches, scrolls and deletions use.
#: A face's cluster and person are not among them, nor in its payload: labels live in MongoDB alone, since
#: writing a payload moves the point out of Qdrant's HNSW index (a clustering run's labels emptied the index of
#: a million faces, and searches scanned them until it was rebuilt).
INDEXED_FIELDS: dict[str, str] = {
    "library": "keyword",
    "image": "keyword",
    "quality": "float",
}


def collection_name(model_id: str, dim: int, kind: str = "faces") -> str:
    """The collection for one embedding model version: `faces_<model>_<dim>d` (`profiles_…` for profiles)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")
    return f"{kind}_{slug}_{dim}d"


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: point id, cosine similarity and payload."""

    id: str
    similarity: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QdrantConfig:
    """Where the vectors live: a server URL, or the folder of the embedded Qdrant Edge shards (one shard
    per collection)."""

    url: str | None
    api_key: str | None
    path: str | None
    collection: str
    dim: int

    @property
    def local(self) -> bool:
        return self.url is None


def in_order(found: Mapping[str, Any], ids: Sequence[str], dim: int) -> NDArray[np.float32]:
    """The vectors `found` (point id → vector) of `ids`, in order; a missing one is an error that names it."""
    missing = [i for i in ids if i not in found]
    if missing:
        raise MissingVectors(
            f"{len(missing)} faces have no vector (first: {missing[0]}); run `facecluster check --repair`"
        )
    return np.array([found[i] for i in ids], dtype=np.float32).reshape(len(ids), dim)


class Vectors(Protocol):
    """What the pipeline and `check` need from the vector store."""

    def ensure_collection(self) -> None: ...
    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32], payloads: Sequence[dict[str, Any]]) -> None: ...
    def delete(self, ids: Sequence[str]) -> int: ...
    def ids(self, library: str | None = None) -> set[str]: ...
    def count(self) -> int: ...
    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]: ...
    def search(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None, payload: bool = True
    ) -> list[list[Hit]]: ...
    def delete_library(self, library: str) -> int: ...
