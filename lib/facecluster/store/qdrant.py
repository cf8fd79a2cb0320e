"""Face vectors on a Qdrant server (`QDRANT_URL`), or in qdrant-client's local mode as its stand-in in tests:
typed payloads, retried calls."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import httpx
import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from facecluster.store.backoff import with_retries
from facecluster.store.vectors import INDEXED_FIELDS, Hit, QdrantConfig, in_order

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The indexed payload fields as a Qdrant server's schema types (the local mode indexes nothing).
PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType] = {
    field: models.PayloadSchemaType(kind) for field, kind in INDEXED_FIELDS.items()
}
_TRANSIENT = (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError)


def _library_filter(library: str | None) -> models.Filter | None:
    if library is None:
        return None
    return models.Filter(must=[models.FieldCondition(key="library", match=models.MatchValue(value=library))])


class QdrantVectors:
    """`Vectors` on a Qdrant client; calls to a server are retried with backoff."""

    def __init__(self, config: QdrantConfig, *, attempts: int = 5, batch: int = 256) -> None:
        self.config = config
        self.attempts = attempts
        self.batch = batch
        if config.local:  # the server client's own stand-in, for tests of this class without a server
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # local mode's advice to use a server for large sets
                self.client = QdrantClient(path=config.path)
        else:
            self.client = QdrantClient(url=config.url, api_key=config.api_key, timeout=30)

    def _call(self, call: Callable[[], T]) -> T:
        where = "local storage" if self.config.local else self.config.url
        return with_retries(call, backend=f"Qdrant at {where}", attempts=self.attempts, retry_on=_TRANSIENT)

    def close(self) -> None:
        self.client.close()

    def ensure_collection(self) -> None:
        name = self.config.collection
        if self._call(lambda: self.client.collection_exists(name)):
            return
        vectors = models.VectorParams(size=self.config.dim, distance=models.Distance.COSINE)
        try:
            self._call(lambda: self.client.create_collection(name, vectors_config=vectors))
        except (UnexpectedResponse, ValueError) as exc:  # created meanwhile by another writer
            if not self.client.collection_exists(name):
                raise exc
        if not self.config.local:
            for field, schema in PAYLOAD_INDEXES.items():
                self._call(partial(self.client.create_payload_index, name, field, schema, wait=True))

    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32], payloads: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(ids), self.batch):
            end = start + self.batch
            points = models.Batch(
                ids=list(ids[start:end]), vectors=vectors[start:end].tolist(), payloads=list(payloads[start:end])
            )
            self._call(partial(self.client.upsert, self.config.collection, points=points, wait=True))

    def _exists(self) -> bool:
        return bool(self._call(lambda: self.client.collection_exists(self.config.collection)))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these points; how many of them were there (a collection that does not exist holds none)."""
        if not ids or not self._exists():
            return 0
        found: list[str] = []
        for start in range(0, len(ids), 1024):
            chunk = list(ids[start : start + 1024])
            points = self._call(
                partial(self.client.retrieve, self.config.collection, chunk, with_payload=False, with_vectors=False)
            )
            found += [str(p.id) for p in points]
        if found:
            selector = models.PointIdsList(points=list(found))
            self._call(lambda: self.client.delete(self.config.collection, points_selector=selector, wait=True))
        return len(found)

    def ids(self, library: str | None = None) -> set[str]:
        """Every point id, of one library or of all, by paginated scroll."""
        query = _library_filter(library)
        found: set[str] = set()
        offset: Any = None
        while True:
            page, offset = self._call(
                partial(
                    self.client.scroll,
                    self.config.collection,
                    scroll_filter=query,
                    limit=1024,
                    offset=offset,
                    with_payload=False,
                )
            )
            found.update(str(point.id) for point in page)
            if offset is None:
                return found

    def count(self) -> int:
        return int(self._call(lambda: self.client.count(self.config.collection, exact=True).count))

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """The vectors of `ids`, in order; a missing one is an error that names it."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(ids), 1024):
            chunk = list(ids[start : start + 1024])
            points = self._call(
                partial(self.client.retrieve, self.config.collection, chunk, with_payload=False, with_vectors=True)
            )
            found.update({str(p.id): p.vector for p in points})  # type: ignore[misc]
        return in_order(found, ids, self.config.dim)

    def search(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None, payload: bool = True
    ) -> list[list[Hit]]:
        """The `limit` nearest points of each query vector, in batched requests; with their payloads unless
        `payload` is False (an empty one each)."""
        if limit <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        requests = [
            models.QueryRequest(query=q.tolist(), limit=limit, filter=_library_filter(library), with_payload=payload)
            for q in np.asarray(queries, dtype=np.float32)
        ]
        out: list[list[Hit]] = []
        for start in range(0, len(requests), 256):
            chunk = requests[start : start + 256]
            answers = self._call(partial(self.client.query_batch_points, self.config.collection, chunk))
            out.extend([Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in a.points] for a in answers)
        return out

    def delete_library(self, library: str) -> int:
        """Remove every point of `library`; how many there were."""
        if not self._exists():
            return 0
        query = _library_filter(library)
        count = int(self._call(lambda: self.client.count(self.config.collection, count_filter=query, exact=True).count))
        selector = models.FilterSelector(filter=query)
        self._call(lambda: self.client.delete(self.config.collection, points_selector=selector, wait=True))
        return count
