"""A data directory from before Qdrant Edge kept its vectors in qdrant-client's local mode (`qdrant/`). On
the first start of the vector store's owner every such collection is copied into a shard of its own,
counted and sampled against the original (the payloads' labels left behind: MongoDB holds them), and the
old folder is removed once every collection matches
(an erased face must not live on in a copy). A migration that is interrupted resumes where it stopped."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facecluster.store.edge import EdgeVectors
from facecluster.store.vectors import QdrantConfig

if TYPE_CHECKING:  # the client loads only when there is something to migrate
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)

#: The local mode's folder beside the shards' folder, and its name while it is being copied.
LEGACY_FOLDER = "qdrant"
MIGRATING_FOLDER = "qdrant-local-mode.migrating"
_DONE = "migrated.json"
_SAMPLE = 256
#: Labels the local mode's payloads carried; MongoDB holds them, and the copies leave them behind.
_LABELS = ("cluster_id", "person_id")


class MigrationMismatch(RuntimeError):
    """A copied collection that does not match its original: the original is kept."""


def migrate_local_mode(root: Path, *, progress_s: float = 10.0) -> int:
    """Copy the local-mode collections beside `root` into Edge shards under it; how many points were copied."""
    legacy, migrating = root.parent / LEGACY_FOLDER, root.parent / MIGRATING_FOLDER
    if (legacy / "collection").is_dir() and not migrating.exists():
        log.info("moving the vectors of %s from qdrant-client's local mode to Qdrant Edge", legacy)
        legacy.rename(migrating)  # its clear name until every collection is copied and checked
    if not migrating.exists():
        return 0
    from qdrant_client import QdrantClient

    root.mkdir(parents=True, exist_ok=True)
    done_file = root / _DONE
    done: list[str] = json.loads(done_file.read_text()) if done_file.exists() else []
    copied = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the local mode's advice to use a server for large collections
        client = QdrantClient(path=str(migrating))
    try:
        for collection in sorted(c.name for c in client.get_collections().collections):
            if collection in done:
                continue
            copied += _copy(client, collection, root, progress_s)
            done.append(collection)
            done_file.write_text(json.dumps(done))
    finally:
        client.close()
    shutil.rmtree(migrating)
    done_file.unlink()
    log.info(
        "the vectors are in Qdrant Edge under %s (%d points copied); the local-mode folder is removed", root, copied
    )
    return copied


def _copy(client: QdrantClient, collection: str, root: Path, progress_s: float) -> int:
    params = client.get_collection(collection).config.params.vectors
    dim = int(params.size)  # type: ignore[union-attr]
    store = EdgeVectors(QdrantConfig(None, None, str(root), collection, dim))
    store.ensure_collection()
    offset, copied, said = None, 0, time.monotonic()
    try:
        while True:
            points, offset = client.scroll(collection, limit=1024, offset=offset, with_payload=True, with_vectors=True)
            if points:
                vectors = np.array([p.vector for p in points], dtype=np.float32).reshape(len(points), dim)
                payloads = [{k: v for k, v in (p.payload or {}).items() if k not in _LABELS} for p in points]
                store.upsert([str(p.id) for p in points], vectors, payloads)
                copied += len(points)
            if time.monotonic() - said >= progress_s:
                log.info("progress: %s: %d points copied", collection, copied)
                said = time.monotonic()
            if offset is None:
                break
        _check(client, store, collection)
    finally:
        store.close()
    log.info("%s: %d points copied and checked", collection, copied)
    return copied


def _check(client: QdrantClient, store: EdgeVectors, collection: str) -> None:
    """The copy holds as many points as the original, and a sample of its vectors equal to the original's."""
    expected = int(client.count(collection, exact=True).count)
    if store.count() != expected:
        raise MigrationMismatch(f"{collection}: {store.count()} points copied of {expected}; the original is kept")
    sample, _ = client.scroll(collection, limit=_SAMPLE, with_payload=True, with_vectors=True)
    if not sample:
        return
    ids = [str(p.id) for p in sample]
    original = np.array([p.vector for p in sample], dtype=np.float32)
    if not np.allclose(store.fetch(ids), original, atol=1e-6):
        raise MigrationMismatch(f"{collection}: copied vectors differ from the original; the original is kept")
