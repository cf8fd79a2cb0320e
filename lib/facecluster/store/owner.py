"""The embedded vector store's owner: the one process that opens the data directory's Qdrant Edge shards
(an actor on the data directory's Ray head, called by name by jobs, the API and the CLI), which also
builds each shard's HNSW index in a task of its own when enough points are unindexed, and swaps it in."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import ray

from facecluster.logs import configure_logging
from facecluster.names import RAY_NAMESPACE
from facecluster.settings import get_settings
from facecluster.store.edge import EdgeVectors, build_index
from facecluster.store.migration import migrate_local_mode
from facecluster.store.vectors import QdrantConfig

log = logging.getLogger(__name__)

#: Unindexed points past which a shard's index is built once writes pause: every search scans them by brute
#: force (at a million points 5,000 add about 0.1 ms to a search, 20,000 about 0.7 ms), while a build
#: rewrites the whole index (80 s of one core at a million points) off the request path.
INDEX_THRESHOLD = 5_000
#: Seconds without a write to a shard before its index is built; past `INDEX_FORCE` unindexed points it is
#: built during writes too, unless a build was outrun by writes in the last `INDEX_BACKOFF_S`.
INDEX_QUIET_S = 10.0
INDEX_FORCE = 200_000
INDEX_BACKOFF_S = 300.0
#: Writes kept for replay on the copy being indexed; past this the build is dropped.
MAX_PENDING_OPERATIONS = 512
FLUSH_EVERY_S = 30.0
_WRITES = {"upsert", "delete", "delete_library"}


@ray.remote(num_cpus=1, max_retries=0, max_calls=1)  # its worker exits after: a 1M-point build leaves 1 GB behind
def _build(staging: str) -> None:
    build_index(staging)


class _Shard:
    """A shard the owner serves, with its writes' times and its index build."""

    def __init__(self, store: EdgeVectors) -> None:
        self.store = store
        self.written_at = 0.0
        self.flushed_at = time.monotonic()
        self.build: Any = None  # the running build task's ref
        self.abandoned_at = -INDEX_BACKOFF_S
        self.left_unindexed = 0  # after the last build: segments too small for Qdrant to index stay so


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class LocalVectorsOwner:
    """Serves `Vectors` calls on the shards under `root`; on its first start, copies a data directory's
    earlier local-mode collections into shards."""

    def __init__(self, root: str) -> None:
        configure_logging(get_settings().general.log_level)  # a migration's progress, in the actor's log
        migrate_local_mode(Path(root))
        self.root = root
        self.shards: dict[str, _Shard] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._housekeeping, name="vectors-housekeeping", daemon=True).start()

    def _shard(self, config: QdrantConfig) -> _Shard:
        shard = self.shards.get(config.collection)
        if shard is None:
            shard = self.shards[config.collection] = _Shard(EdgeVectors(config))
        return shard

    def call(self, config: QdrantConfig, method: str, *args: Any) -> Any:
        with self.lock:
            shard = self._shard(config)
            result = getattr(shard.store, method)(*args)
            if method in _WRITES:
                shard.written_at = time.monotonic()
                if shard.store.pending is not None and len(shard.store.pending) > MAX_PENDING_OPERATIONS:
                    self._abandon(shard, "writes outran it")
            return result

    def calls(self, batch: list[tuple[QdrantConfig, str, tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
        """Several `call`s in one round trip, in order: each one's result, or the error it raised."""
        outcomes: list[tuple[bool, Any]] = []
        for config, method, args in batch:
            try:
                outcomes.append((True, self.call(config, method, *args)))
            except Exception as exc:  # the caller that asked for it raises it
                outcomes.append((False, exc))
        return outcomes

    def status(self) -> dict[str, dict[str, Any]]:
        """Each open shard's points, unindexed points and whether its index is being built."""
        with self.lock:
            return {
                name: {
                    "points": s.store.count(),
                    "unindexed": s.store.unindexed(),
                    "building": s.build is not None,
                    "due": s.build is None and self._due(s),
                }
                for name, s in self.shards.items()
            }

    def _abandon(self, shard: _Shard, why: str) -> None:
        log.info("the index build of %s is dropped: %s", shard.store.folder, why)
        ray.cancel(shard.build, force=True)
        shard.build = None
        shard.abandoned_at = time.monotonic()
        shard.store.abandon_indexing()

    def _housekeeping(self) -> None:
        while True:
            time.sleep(1.0)
            with self.lock:
                for shard in self.shards.values():
                    try:
                        self._tend(shard)
                    except Exception:  # the shard keeps serving without its index; the next round tries again
                        log.exception("housekeeping of %s failed", shard.store.folder)

    @staticmethod
    def _due(shard: _Shard) -> bool:
        """Whether the shard has gained enough points outside its index since the last build to build it again
        (a small shard's points stay outside: the engine searches them by brute force)."""
        return bool(shard.written_at) and shard.store.unindexed() - shard.left_unindexed >= INDEX_THRESHOLD

    def _tend(self, shard: _Shard) -> None:
        """Swap in a finished index, start a due one, flush what was written since the last flush."""
        now = time.monotonic()
        if shard.build is not None:
            ready, _ = ray.wait([shard.build], timeout=0)
            if ready:
                try:
                    ray.get(shard.build)
                except Exception as exc:
                    self._abandon(shard, f"it failed: {exc}")
                else:
                    shard.build = None
                    shard.store.finish_indexing()
                    shard.flushed_at = now
                    shard.left_unindexed = shard.store.unindexed()
        elif self._due(shard):
            unindexed = shard.store.unindexed()
            quiet = now - shard.written_at >= INDEX_QUIET_S
            forced = unindexed >= INDEX_FORCE and now - shard.abandoned_at >= INDEX_BACKOFF_S
            if quiet or forced:
                log.info("building the HNSW index of %s (%d points unindexed)", shard.store.folder, unindexed)
                shard.build = _build.remote(str(shard.store.start_indexing()))
        if shard.written_at > shard.flushed_at and now - shard.flushed_at >= FLUSH_EVERY_S:
            shard.store.flush()  # the write-ahead log already holds every write; this keeps its replay short
            shard.flushed_at = now


def owner_name(root: str) -> str:
    return "facecluster-qdrant-" + hashlib.sha1(root.encode(), usedforsecurity=False).hexdigest()[:12]


def local_vectors_owner(root: str) -> Any:
    """The owner actor of the shards under `root`, started when it does not run (it outlives jobs)."""
    return LocalVectorsOwner.options(  # type: ignore[attr-defined]
        name=owner_name(root), namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(root)


class OwnedVectors:
    """`Vectors` whose calls run in the owner actor of the embedded shards."""

    def __init__(self, config: QdrantConfig) -> None:
        assert config.path is not None
        self.config = config
        self.owner = local_vectors_owner(config.path)

    def _call(self, method: str, *args: Any) -> Any:
        return ray.get(self.owner.call.remote(self.config, method, *args))

    @staticmethod
    def together(calls: list[tuple[OwnedVectors, str, tuple[Any, ...]]]) -> list[Any]:
        """Calls on collections of one owner (a face search and a profile search) in one round trip."""
        owner = calls[0][0].owner
        outcomes = ray.get(owner.calls.remote([(vectors.config, method, args) for vectors, method, args in calls]))
        for ok, value in outcomes:
            if not ok:
                raise value
        return [value for _, value in outcomes]

    def ensure_collection(self) -> None:
        self._call("ensure_collection")

    def upsert(self, ids: Any, vectors: Any, payloads: Any) -> None:
        self._call("upsert", ids, vectors, payloads)

    def delete(self, ids: Any) -> int:
        return int(self._call("delete", ids))

    def ids(self, library: str | None = None) -> set[str]:
        return set(self._call("ids", library))

    def count(self) -> int:
        return int(self._call("count"))

    def fetch(self, ids: Any) -> Any:
        return self._call("fetch", ids)

    def search(self, queries: Any, limit: int, library: str | None = None, payload: bool = True) -> Any:
        return self._call("search", queries, limit, library, payload)

    def delete_library(self, library: str) -> int:
        return int(self._call("delete_library", library))
