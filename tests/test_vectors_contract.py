"""One contract for both vector stores: the embedded Qdrant Edge shards and the Qdrant server client (on
qdrant-client's local mode, which speaks the server client's API), so the `QDRANT_URL` path keeps its
coverage. Then what only the Edge store does: indexes built off the request path, and recovery."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from facecluster.store.edge import STAGING_SUFFIX, SWAP_SUFFIX, EdgeVectors, ShardUnavailable, build_index
from facecluster.store.migration import MIGRATING_FOLDER, migrate_local_mode
from facecluster.store.qdrant import QdrantVectors
from facecluster.store.vectors import MissingVectors, QdrantConfig

pytestmark = pytest.mark.fast
DIM = 8
Store = EdgeVectors | QdrantVectors


def config(folder: Path, collection: str = "faces_test_8d") -> QdrantConfig:
    return QdrantConfig(url=None, api_key=None, path=str(folder), collection=collection, dim=DIM)


@pytest.fixture(params=["edge", "server client"])
def vectors(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store: Store = EdgeVectors(config(tmp_path)) if request.param == "edge" else QdrantVectors(config(tmp_path))
    store.ensure_collection()
    yield store
    store.close()


def unit(rows: int, seed: int = 0) -> NDArray[np.float32]:
    return unit_rows(np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32))


def unit_rows(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    normed: NDArray[np.float32] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normed


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def fill(store: Store, n: int = 10) -> tuple[list[str], NDArray[np.float32]]:
    """`n` points, the even ones in library `a`, the odd ones in `b`."""
    points, vectors = ids(n), unit(n)
    store.upsert(points, vectors, [{"library": "ab"[i % 2], "image": f"{i}.jpg"} for i in range(n)])
    return points, vectors


def test_points_are_counted_listed_and_fetched_in_order(vectors: Store) -> None:
    points, rows = fill(vectors)
    assert vectors.count() == 10
    assert vectors.ids() == set(points)
    assert vectors.ids("a") == set(points[0::2]) and vectors.ids("nobody") == set()
    order = [points[3], points[0], points[7]]
    assert np.allclose(vectors.fetch(order), rows[[3, 0, 7]], atol=1e-6)
    with pytest.raises(MissingVectors, match="1 faces have no vector"):
        vectors.fetch([points[0], str(uuid.uuid4())])
    vectors.upsert(points[:2], unit(2, seed=1), [{"library": "a"}, {"library": "b"}])  # same ids: replaced
    assert vectors.count() == 10 and np.allclose(vectors.fetch(points[:2]), unit(2, seed=1), atol=1e-6)
    vectors.ensure_collection()  # again: nothing changes
    assert vectors.count() == 10


def test_search_finds_the_nearest_within_a_library_with_payloads(vectors: Store) -> None:
    points, rows = fill(vectors)
    hits = vectors.search(rows[[2, 3]], limit=3, library="a")
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0].id == points[2] and hits[0][0].similarity == pytest.approx(1.0, abs=1e-5)
    assert hits[0][0].payload == {"library": "a", "image": "2.jpg"}
    assert all(hit.payload["library"] == "a" for hit in hits[1])
    assert hits[0][0].similarity >= hits[0][1].similarity >= hits[0][2].similarity
    bare = vectors.search(rows[[2, 3]], limit=3, library="a", payload=False)  # what a clustering run asks
    assert [[(h.id, h.similarity) for h in row] for row in bare] == [
        [(h.id, h.similarity) for h in row] for row in hits
    ]
    assert all(h.payload == {} for row in bare for h in row)
    assert vectors.search(rows[:2], limit=0) == [[], []]
    assert vectors.search(rows[:0], limit=3) == []


def test_deletions_say_how_many_points_there_were(vectors: Store) -> None:
    points, _ = fill(vectors)
    assert vectors.delete([points[0], points[1], str(uuid.uuid4())]) == 2
    assert vectors.delete([]) == 0
    assert vectors.count() == 8 and points[0] not in vectors.ids()
    assert vectors.delete_library("a") == 4
    assert vectors.ids() == set(points[3::2]) and vectors.delete_library("a") == 0


def test_a_collection_never_created_holds_nothing(tmp_path: Path) -> None:
    for store in (EdgeVectors(config(tmp_path / "edge")), QdrantVectors(config(tmp_path / "local"))):
        assert store.delete([str(uuid.uuid4())]) == 0 and store.delete_library("a") == 0
        store.close()


def test_edge_points_survive_a_reopen(tmp_path: Path) -> None:
    store = EdgeVectors(config(tmp_path))
    points, rows = fill(store, 50)
    store.close()
    again = EdgeVectors(config(tmp_path))
    assert again.ids() == set(points) and np.allclose(again.fetch(points), rows, atol=1e-6)
    again.close()


def test_writes_during_an_index_build_are_replayed_on_the_indexed_copy(tmp_path: Path) -> None:
    store = EdgeVectors(config(tmp_path))
    points, rows = fill(store, 3000)
    staging = store.start_indexing()
    more, more_rows = ids(5), unit(5, seed=2)
    store.upsert(more, more_rows, [{"library": "c"}] * 5)  # while the copy is being indexed
    assert store.delete(points[:10]) == 10
    store.upsert(points[10:11], rows[10:11], [{"library": "a", "image": "again.jpg"}])  # a face written again
    build_index(str(staging))
    store.finish_indexing()
    assert store.count() == 3000 - 10 + 5
    assert store.ids("c") == set(more) and np.allclose(store.fetch(more), more_rows, atol=1e-6)
    assert store.search(rows[10:11], limit=1)[0][0].payload["image"] == "again.jpg"
    assert not staging.exists() and not any(p.name.endswith((".old", SWAP_SUFFIX)) for p in tmp_path.iterdir())
    store.close()


def test_points_written_again_after_an_index_build_count_as_unindexed_until_the_next(tmp_path: Path) -> None:
    # Qdrant Edge moves a point written again (a re-ingested or repaired face) out of the HNSW segment, and
    # still counts it as indexed: the owner would never rebuild, and every search would scan the moved points.
    store = EdgeVectors(QdrantConfig(url=None, api_key=None, path=str(tmp_path), collection="faces_128d", dim=128))
    points = ids(30_000)  # enough for Qdrant to index them
    rows = np.random.default_rng(0).normal(size=(len(points), 128)).astype(np.float32)
    store.upsert(points, rows, [{"library": "a"}] * len(points))
    build_index(str(store.start_indexing()))
    store.finish_indexing()
    assert store.unindexed() == 0
    store.upsert(points[:1000], rows[:1000], [{"library": "a"}] * 1000)
    store.upsert(ids(5), rows[:5], [{"library": "a"}] * 5)
    assert store.unindexed() == 1005
    store.close()
    again = EdgeVectors(store.config)
    assert again.unindexed() == 1005  # across a restart
    build_index(str(again.start_indexing()))
    again.finish_indexing()
    assert again.unindexed() < 1005  # what Qdrant left unindexed: a part too small to index stays a plain segment
    again.close()


def test_a_half_done_swap_is_finished_or_undone_on_open(tmp_path: Path) -> None:
    store = EdgeVectors(config(tmp_path))
    points, _ = fill(store, 20)
    staging = store.start_indexing()
    store.upsert(ids(1), unit(1), [{"library": "a"}])  # acknowledged, not in the copy
    store.close()  # killed here: no swap mark, so the copy is dropped and the shard has every write
    again = EdgeVectors(config(tmp_path))
    assert again.count() == 21 and not staging.exists()
    staging = again.start_indexing()
    again.pending = None
    again.close()
    Path(str(staging).removesuffix(STAGING_SUFFIX) + SWAP_SUFFIX).touch()  # killed after marking the copy complete
    third = EdgeVectors(config(tmp_path))
    assert third.ids() >= set(points) and third.count() == 21 and not staging.exists()
    third.close()


def test_a_shard_that_does_not_open_is_named_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "faces_test_8d"
    folder.mkdir()
    (folder / "wal").write_text("not a write-ahead log")
    with pytest.raises(ShardUnavailable, match="faces_test_8d"):
        EdgeVectors(config(tmp_path)).ensure_collection()
    assert (folder / "wal").read_text() == "not a write-ahead log"


def local_mode_folder(data: Path, faces: int = 300) -> dict[str, tuple[list[str], NDArray[np.float32]]]:
    """A data directory's vectors as the code before Qdrant Edge stored them: qdrant-client's local mode in
    `qdrant/`, a faces and a profiles collection, labelled faces among them."""
    written: dict[str, tuple[list[str], NDArray[np.float32]]] = {}
    for collection, n in (("faces_test_8d", faces), ("profiles_test_8d", 3)):
        store = QdrantVectors(config(data / "qdrant", collection))
        store.ensure_collection()
        points, rows = ids(n), unit(n, seed=n)
        payloads = [
            {"library": "a", "image": f"{i}.jpg", "person_id": f"per_{i % 4}", "cluster_id": None} for i in range(n)
        ]
        store.upsert(points, rows, payloads)
        written[collection] = (points, rows)
        store.close()
    return written


def test_a_local_mode_data_directory_moves_to_edge_losing_nothing(tmp_path: Path) -> None:
    written = local_mode_folder(tmp_path)
    assert migrate_local_mode(tmp_path / "vectors") == 303
    for collection, (points, rows) in written.items():
        store = EdgeVectors(config(tmp_path / "vectors", collection))
        assert store.ids() == set(points) and np.allclose(store.fetch(points), rows, atol=1e-6)
        hit = store.search(rows[1:2], limit=1)[0][0]
        # The labels the local mode's payloads carried stay behind: MongoDB holds them, and an erasure there
        # must not miss a copy here.
        assert hit.id == points[1] and hit.payload == {"library": "a", "image": "1.jpg"}
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]  # the local-mode copy is gone
    assert migrate_local_mode(tmp_path / "vectors") == 0  # once


def test_an_interrupted_migration_resumes(tmp_path: Path) -> None:
    written = local_mode_folder(tmp_path)
    (tmp_path / "qdrant").rename(tmp_path / MIGRATING_FOLDER)  # killed while copying the faces:
    points, rows = written["faces_test_8d"]
    partial = EdgeVectors(config(tmp_path / "vectors", "faces_test_8d"))
    partial.upsert(points[:100], rows[:100], [{"library": "a"}] * 100)
    partial.close()
    migrate_local_mode(tmp_path / "vectors")
    store = EdgeVectors(config(tmp_path / "vectors", "faces_test_8d"))
    assert store.ids() == set(points) and store.search(rows[:1], limit=1)[0][0].payload["image"] == "0.jpg"
    store.close()
    assert not (tmp_path / MIGRATING_FOLDER).exists()


_MIGRATE_THEN_DIE = """
import logging, sys
from pathlib import Path
from facecluster.store.migration import migrate_local_mode
class Stop(logging.Handler):
    def emit(self, record):
        if "points copied" in record.getMessage():
            print("copying", flush=True)
            sys.stdin.read()  # killed here: the first page is in the shard, the rest is not
logging.getLogger("facecluster.store.migration").addHandler(Stop())
logging.getLogger("facecluster.store.migration").setLevel(logging.INFO)
migrate_local_mode(Path(sys.argv[1]) / "vectors", progress_s=0.0)
"""


def test_a_migration_killed_while_copying_resumes_and_loses_nothing(tmp_path: Path) -> None:
    written = local_mode_folder(tmp_path, faces=2500)
    command = [sys.executable, "-c", _MIGRATE_THEN_DIE, str(tmp_path)]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "copying\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (tmp_path / MIGRATING_FOLDER).exists() and not (tmp_path / "qdrant").exists()
    assert migrate_local_mode(tmp_path / "vectors") == 2503  # the next start copies it all again, then checks
    for collection, (points, rows) in written.items():
        store = EdgeVectors(config(tmp_path / "vectors", collection))
        assert store.ids() == set(points) and np.allclose(store.fetch(points), rows, atol=1e-6)
        assert store.search(rows[2:3], limit=1)[0][0].payload["image"] == "2.jpg"
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors"]


_BUILD_THEN_DIE = """
import sys, uuid, numpy as np
from facecluster.store.edge import EdgeVectors, build_index
from facecluster.store.vectors import QdrantConfig
store = EdgeVectors(QdrantConfig(url=None, api_key=None, path=sys.argv[1], collection="faces_128d", dim=128))
points = [str(uuid.UUID(int=i + 1)) for i in range(30_000)]
rows = np.random.default_rng(0).normal(size=(len(points), 128)).astype(np.float32)
store.upsert(points, rows, [{"library": "a"}] * len(points))
staging = store.start_indexing()
print("building", flush=True)
build_index(str(staging))
print("built", flush=True)
sys.stdin.read()  # killed here at the latest: before the swap
"""


def test_a_shard_killed_during_its_index_build_reopens_with_every_point(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _BUILD_THEN_DIE, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "building\n"
    time.sleep(1.0)  # inside the HNSW build (a few seconds for 30,000 points)
    child.send_signal(signal.SIGKILL)
    child.wait()
    store = EdgeVectors(QdrantConfig(url=None, api_key=None, path=str(tmp_path), collection="faces_128d", dim=128))
    points = [str(uuid.UUID(int=i + 1)) for i in range(30_000)]
    rows = np.random.default_rng(0).normal(size=(len(points), 128)).astype(np.float32)
    assert store.count() == 30_000 and np.allclose(store.fetch(points[::997]), unit_rows(rows[::997]), atol=1e-5)
    assert not (tmp_path / f"faces_128d{STAGING_SUFFIX}").exists()  # the half-built copy is dropped
    build_index(str(store.start_indexing()))  # and the next build finishes the work
    store.finish_indexing()
    assert store.unindexed() == 0 and store.search(rows[5:6], limit=1)[0][0].id == points[5]
    store.close()


_WRITE_UNTIL_FULL = """
import resource, signal, sys, uuid, numpy as np
from facecluster.store.edge import EdgeVectors, ShardWriteFailed
from facecluster.store.vectors import QdrantConfig
store = EdgeVectors(QdrantConfig(url=None, api_key=None, path=sys.argv[1], collection="faces_test_8d", dim=8))
store.count()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2**21, 2**21))  # files past 2 MiB cannot grow: the disk is full
try:
    for batch in range(1000):
        points = [str(uuid.UUID(int=10**6 + batch * 1000 + i)) for i in range(1000)]
        store.upsert(points, np.ones((1000, 8), np.float32), [{"library": "b", "image": "x" * 200}] * 1000)
        print(batch, flush=True)
except ShardWriteFailed as exc:
    print("failed:", exc, flush=True)
"""


def test_a_full_disk_is_an_error_that_loses_nothing_stored(tmp_path: Path) -> None:
    store = EdgeVectors(config(tmp_path))
    points, rows = fill(store, 100)
    store.close()
    child = subprocess.run([sys.executable, "-c", _WRITE_UNTIL_FULL, str(tmp_path)], capture_output=True, text=True)
    lines = child.stdout.splitlines()
    assert child.returncode == 0 and lines[-1].startswith("failed: writing to the Qdrant Edge shard at ")
    assert "File too large" in lines[-1]
    acknowledged = {str(uuid.UUID(int=10**6 + int(b) * 1000 + i)) for b in lines[:-1] for i in range(1000)}
    again = EdgeVectors(config(tmp_path))
    assert set(points) | acknowledged <= again.ids() and np.allclose(again.fetch(points), rows, atol=1e-6)
    again.close()
