"""Face vectors in Qdrant Edge (the server's engine in-process): one shard per collection under the data
directory's `vectors/` folder, with the payload indexes of a server, a write-ahead log (a killed process
loses no acknowledged write) and an HNSW index built by `build_index` in another process, so neither a
search nor an ingest waits for it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as edge
from numpy.typing import NDArray

from facecluster.store.backoff import BackendUnavailable
from facecluster.store.vectors import INDEXED_FIELDS, Hit, QdrantConfig, in_order

log = logging.getLogger(__name__)

_SCHEMA = {"keyword": edge.PayloadSchemaType.Keyword, "float": edge.PayloadSchemaType.Float}
_PAGE = 4096

#: Beside a shard's folder: the copy an index is built in, and the mark that the built copy is complete.
STAGING_SUFFIX = ".indexing"
SWAP_SUFFIX = ".swap"
OLD_SUFFIX = ".old"
MOVED_SUFFIX = ".moved"


class ShardUnavailable(BackendUnavailable):
    """A shard folder that exists but cannot be opened: never replaced by an empty one."""


class ShardWriteFailed(BackendUnavailable):
    """A write the shard could not take (a full disk): what it acknowledged before stays stored."""


def _library_filter(library: str | None) -> edge.Filter | None:
    if library is None:
        return None
    return edge.Filter(must=[edge.FieldCondition(key="library", match=edge.MatchValue(value=library))])


def shard_config(dim: int) -> edge.EdgeConfig:
    return edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine))


def recover(folder: Path) -> None:
    """Finish or undo an index swap that a killed process left half done: with the swap mark, the built copy
    (which holds every acknowledged write) replaces the shard; without it the copy is dropped and the shard
    kept (it had every write all along)."""
    staging, mark, old = (
        folder.with_name(folder.name + suffix) for suffix in (STAGING_SUFFIX, SWAP_SUFFIX, OLD_SUFFIX)
    )
    if mark.exists():
        if staging.exists():
            if folder.exists():
                folder.rename(old)
            staging.rename(folder)
        mark.unlink()
    elif staging.exists():
        shutil.rmtree(staging)
    if old.exists():
        if folder.exists():
            shutil.rmtree(old)
        else:
            old.rename(folder)


def open_shard(folder: Path, dim: int, *, create: bool) -> edge.EdgeShard | None:
    """The shard at `folder`; created with the payload indexes when missing and `create`, else None. A folder
    that is there but does not open is an error that names it."""
    recover(folder)
    if folder.exists():
        try:
            return edge.EdgeShard.load(str(folder))
        except Exception as exc:  # the binding raises plain Exception
            raise ShardUnavailable(f"the Qdrant Edge shard at {folder} cannot be opened: {exc}") from exc
    if not create:
        return None
    shard = edge.EdgeShard.create(str(folder), shard_config(dim))
    for field, kind in INDEXED_FIELDS.items():
        shard.update(edge.UpdateOperation.create_field_index(field, _SCHEMA[kind]))
    shard.flush()
    return shard


def build_index(staging: str) -> None:
    """Build the HNSW index of the shard copy at `staging` (synchronous; run it in a process of its own)."""
    shard = edge.EdgeShard.load(staging)
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


class EdgeVectors:
    """`Vectors` on one Qdrant Edge shard; one process opens a shard (the embedded default's owner actor).
    While an index is built on a copy, every write is also kept in `pending`, to replay on the copy."""

    def __init__(self, config: QdrantConfig) -> None:
        assert config.path is not None
        self.config = config
        self.folder = Path(config.path) / config.collection
        self._shard: edge.EdgeShard | None = None
        self.pending: list[edge.UpdateOperation] | None = None
        # Points written since the shard's index was built: Qdrant Edge moves every upserted point (a new
        # face, or a stored one written again) out of the HNSW segment, and its `indexed_vectors_count` keeps
        # counting them there. Kept beside the shard across restarts (as of the last flush).
        self.moved_file = self.folder.with_name(self.folder.name + MOVED_SUFFIX)
        self.moved = int(self.moved_file.read_text()) if self.moved_file.exists() else 0
        self._moved_at_start = 0

    def _opened(self, *, create: bool = False) -> edge.EdgeShard | None:
        if self._shard is None:
            self._shard = open_shard(self.folder, self.config.dim, create=create)
        return self._shard

    def _update(self, operation: edge.UpdateOperation) -> None:
        shard = self._opened(create=True)
        assert shard is not None
        try:
            shard.update(operation)
        except Exception as exc:  # the binding raises plain Exception: a full disk, a file it cannot write
            raise ShardWriteFailed(f"writing to the Qdrant Edge shard at {self.folder} failed: {exc}") from exc
        if self.pending is not None:
            self.pending.append(operation)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._save_moved()
            self._shard.close()
            self._shard = None

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._save_moved()

    def _save_moved(self) -> None:
        self.moved_file.write_text(str(self.moved))

    def ensure_collection(self) -> None:
        self._opened(create=True)

    def upsert(self, ids: Sequence[str], vectors: NDArray[np.float32], payloads: Sequence[dict[str, Any]]) -> None:
        rows = np.asarray(vectors, dtype=np.float32).tolist()
        for start in range(0, len(ids), _PAGE):
            points = [edge.Point(ids[i], rows[i], payloads[i]) for i in range(start, min(start + _PAGE, len(ids)))]
            self._update(edge.UpdateOperation.upsert_points(points))
            self.moved += len(points)

    def _found(self, ids: Sequence[str], *, vectors: bool) -> Iterator[edge.Record]:
        shard = self._opened()
        if shard is None:
            return
        for start in range(0, len(ids), 1024):
            yield from shard.retrieve(list(ids[start : start + 1024]), with_payload=False, with_vector=vectors)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these points; how many of them were there."""
        found = [str(record.id) for record in self._found(ids, vectors=False)]
        if found:
            self._update(edge.UpdateOperation.delete_points(found))  # type: ignore[arg-type]
        return len(found)

    def pages(self, library: str | None = None, *, vectors: bool = False) -> Iterator[list[edge.Record]]:
        """Every point, of one library or of all, a page at a time."""
        shard = self._opened()
        if shard is None:
            return
        offset: Any = None
        while True:
            request = edge.ScrollRequest(
                offset=offset, limit=_PAGE, filter=_library_filter(library), with_payload=False, with_vector=vectors
            )
            page, offset = shard.scroll(request)
            if page:
                yield page
            if offset is None:
                return

    def ids(self, library: str | None = None) -> set[str]:
        return {str(record.id) for page in self.pages(library) for record in page}

    def count(self) -> int:
        shard = self._opened()
        return 0 if shard is None else int(shard.count(edge.CountRequest(exact=True)))

    def unindexed(self) -> int:
        """Points outside the HNSW index (searched by brute force): those written since it was built, or
        more where Qdrant says so."""
        shard = self._opened()
        if shard is None:
            return 0
        info = shard.info()
        points = int(info.points_count)
        return min(points, max(points - int(info.indexed_vectors_count), self.moved))

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        """The vectors of `ids`, in order; a missing one is an error that names it."""
        found = {str(record.id): record.vector for record in self._found(ids, vectors=True)}
        return in_order(found, ids, self.config.dim)

    def search(
        self, queries: NDArray[np.float32], limit: int, library: str | None = None, payload: bool = True
    ) -> list[list[Hit]]:
        """The `limit` nearest points of each query vector, planned as one batch; with their payloads unless
        `payload` is False (an empty one each: a clustering run needs ids and similarities only)."""
        shard = self._opened()
        if shard is None or limit <= 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        requests = [
            edge.QueryRequest(
                limit=limit, query=edge.Query.Nearest(q), filter=_library_filter(library), with_payload=payload
            )
            for q in np.asarray(queries, dtype=np.float32).tolist()
        ]
        answers = shard.query_batch(edge.QueryBatchRequest(requests))
        return [[Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points] for points in answers]

    def delete_library(self, library: str) -> int:
        """Remove every point of `library`; how many there were."""
        shard = self._opened()
        if shard is None:
            return 0
        query = _library_filter(library)
        assert query is not None
        count = int(shard.count(edge.CountRequest(exact=True, filter=query)))
        if count:
            self._update(edge.UpdateOperation.delete_points_by_filter(query))
        return count

    # An index built off the request path: copy, build elsewhere, replay what came meanwhile, swap.

    def start_indexing(self) -> Path:
        """A flushed copy of the shard to build the index in (the caller runs `build_index` on it elsewhere);
        from now on writes are also kept to replay on it."""
        staging = self.folder.with_name(self.folder.name + STAGING_SUFFIX)
        shutil.rmtree(staging, ignore_errors=True)
        self.flush()
        shutil.copytree(self.folder, staging)
        self.pending = []
        self._moved_at_start = self.moved
        return staging

    def abandon_indexing(self) -> None:
        """Drop a copy whose build failed or that too many writes outran."""
        self.pending = None
        shutil.rmtree(self.folder.with_name(self.folder.name + STAGING_SUFFIX), ignore_errors=True)

    def finish_indexing(self) -> None:
        """Replay the writes made during the build on the indexed copy and make it the shard."""
        staging = self.folder.with_name(self.folder.name + STAGING_SUFFIX)
        built = edge.EdgeShard.load(str(staging))
        for operation in self.pending or []:
            built.update(operation)
        built.flush()
        built.close()
        self.pending = None
        self.moved -= self._moved_at_start  # the copy holds in its index what was written before the build
        self.folder.with_name(self.folder.name + SWAP_SUFFIX).touch()  # the copy is complete: recover() keeps it
        self.close()
        recover(self.folder)
        self._opened()
        log.info("the HNSW index of %s is built and in use", self.folder)
