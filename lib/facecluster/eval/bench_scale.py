"""`facecluster bench scale`: a library of N faces whose true identities are known (the central faces of
real photos, grown with noisy copies), written through the store layer as an ingest writes it, then every
library-wide operation timed end to end on the embedded default: clustering (with BCubed F against the
identities), dual clustering with 1 % of persons labelled, clustering 1 % new faces into it incrementally,
matching another 1 %, assignment, statistics, face search under concurrent clients, export, erasing a person
and deleting the library."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from facecluster.deployment import scratch_data_dir
from facecluster.engine.decode import IMAGE_SUFFIXES
from facecluster.engine.quality import QUALITY_FIELDS
from facecluster.eval.bench import PeakMemory, grow
from facecluster.eval.metrics import score_clustering
from facecluster.logs import Progress
from facecluster.settings import Settings
from facecluster.store.connection import Connection, connect
from facecluster.store.documents import face_document, face_payload
from facecluster.store.meta import now

log = logging.getLogger(__name__)
T = TypeVar("T")
LIBRARY = "bench/scale"
FACES_PER_PHOTO = 4
WRITE_CHUNK = 5_000


def central_faces(settings: Settings, images: Path) -> tuple[NDArray[np.float32], list[str]]:
    """The central face of every photo under `images` and its person (the photo's folder), cached in the data
    directory by embedder version: the bench runs again without the detector."""
    from facecluster.engine.faces import FaceEngine, model_version
    from facecluster.eval.verification import embed_central_faces

    engine = FaceEngine.from_settings(settings)
    paths = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    key = hashlib.sha256(f"{model_version(settings, engine.embedder.spec)}\n{images.resolve()}".encode()).hexdigest()
    cache = settings.general.data_dir / "cache" / f"central-faces-{key[:16]}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["vectors"].astype(np.float32), [str(p) for p in saved["persons"]]
    found = embed_central_faces(engine, paths)
    kept = [(v, p.parent.name) for p, v in found.items() if v is not None]
    vectors = np.stack([v for v, _ in kept]).astype(np.float32)
    persons = [person for _, person in kept]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, persons=np.array(persons))
    return vectors, persons


def timed(results: dict[str, Any], name: str, run: Callable[[], T]) -> T:
    log.info("progress: %s", name)
    start = time.perf_counter()
    value = run()
    results[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
    log.info("progress: %s took %.1f s", name, results[f"{name}_seconds"])
    return value


Chunk = tuple[list[str], list[dict[str, Any]], list[dict[str, Any]], NDArray[np.float32]]


def _faces(
    start: int, vectors: NDArray[np.float32], stores: Connection, library: str, per_photo: int
) -> Iterator[Chunk]:
    """The documents, payloads and ids of faces `start`… (photos of `per_photo` faces), in chunks."""
    from facecluster.ingest.stages import face_id, image_id

    versions = ("synthetic@bench", stores.space.base, stores.config.qdrant.collection)
    quality = dict.fromkeys(QUALITY_FIELDS, 0.8) | {"face_size": 96.0}
    for first in range(0, len(vectors), WRITE_CHUNK):
        ids, docs, images = [], [], {}
        for n in range(start + first, start + min(first + WRITE_CHUNK, len(vectors))):
            photo, index = divmod(n, per_photo)
            key = f"p{photo:08d}.jpg"
            fid = face_id(library, key, "etag", index, versions[0])
            ids.append(fid)
            bbox = [20.0 + 120 * index, 40.0, 96.0, 96.0]
            landmarks = [[bbox[0] + 30, 70.0], [bbox[0] + 66, 70.0], [bbox[0] + 48, 90.0], [bbox[0] + 34, 110.0]]
            docs.append(
                face_document(
                    face_id=fid, library=library, image=key, image_id=image_id(library, key), index=index,
                    bbox=bbox, landmarks=[*landmarks, [bbox[0] + 62, 110.0]], score=0.9, quality=quality,
                    versions=versions, labels={}, at=now(),
                )
            )  # fmt: skip
            images[key] = {
                "_id": image_id(library, key), "library": library, "key": key, "uri": f"bench://{key}",
                "etag": "etag", "size": 0, "status": "done", "error_code": None, "error": None,
                "faces": per_photo, "width": 640, "height": 480, "detector": versions[0],
                "embedder": versions[1], "job_id": "bench", "updated_at": now(),
            }  # fmt: skip
        yield ids, docs, list(images.values()), vectors[first : first + len(ids)]


def write_library(
    stores: Connection,
    start: int,
    vectors: NDArray[np.float32],
    library: str = LIBRARY,
    per_photo: int = FACES_PER_PHOTO,
) -> list[str]:
    """Faces written as `ingest.stages.write_batch` writes them: vectors, then faces, then photos."""
    written: list[str] = []
    with Progress(f"bench: {len(vectors):,} faces into {library}") as progress:
        progress.step("writing faces")
        for ids, docs, images, rows in _faces(start, vectors, stores, library, per_photo):
            stores.vectors.upsert(ids, rows, [face_payload(doc) for doc in docs])
            stores.meta.write_faces(docs)
            stores.meta.write_images(images)
            written += ids
            progress.advance(len(ids))
    return written


def shards(stores: Connection) -> dict[str, dict[str, Any]] | None:
    """Each embedded shard's points, unindexed points, whether its index is being built and whether a build is
    due, from its owner; None on a server (or an owner that builds no index of its own)."""
    status = getattr(getattr(stores.own_vectors, "owner", None), "status", None)
    if status is None:
        return None
    import ray

    return dict(ray.get(status.remote()))


def settle_index(stores: Connection, timeout_s: float = 3600) -> None:
    """Wait until the embedded store's owner has built the index it is due to build (no-op on a server)."""
    deadline, said = time.monotonic() + timeout_s, time.monotonic()
    while time.monotonic() < deadline and (state := shards(stores)) is not None:
        pending = {k: v for k, v in state.items() if v["building"] or v["due"]}
        if not pending:
            return
        if time.monotonic() - said >= 10:
            log.info("progress: waiting for the index: %s", pending)
            said = time.monotonic()
        time.sleep(2)


def unindexed(stores: Connection) -> int | None:
    """Points of the embedded store's shards outside their HNSW index (None on a server)."""
    state = shards(stores)
    return None if state is None else sum(int(shard["unindexed"]) for shard in state.values())


def bcubed(stores: Connection, truth: dict[str, str], library: str = LIBRARY) -> float:
    """BCubed F of the library's clusters and persons against the true identities."""
    labels: dict[str, int] = {}
    predicted = []
    for face in stores.meta.iter_faces(library, ["cluster_id", "person_id"]):
        who = face.get("person_id") or face.get("cluster_id")
        predicted.append((face["_id"], -1 if who is None else labels.setdefault(str(who), len(labels))))
    known = [(truth[face], label) for face, label in predicted if face in truth]
    return round(score_clustering([t for t, _ in known], [p for _, p in known]).bcubed_f, 4)


def label_persons(stores: Connection, faces: list[str], truth: dict[str, str], share: float) -> list[str]:
    """Label two faces each of `share` of the identities with two or more faces, as a human would; the
    person ids."""
    by_identity: dict[str, list[str]] = {}
    for face in faces:
        by_identity.setdefault(truth[face], []).append(face)
    chosen = [i for i, members in sorted(by_identity.items()) if len(members) >= 2]
    chosen = chosen[: max(1, int(share * len(by_identity)))]
    updates, persons = [], []
    for n, identity in enumerate(chosen):
        person = f"per_bench{n:07d}"
        persons.append(person)
        labelled = by_identity[identity][:2]
        updates += [(face, {"person_id": person, "label_source": "human"}) for face in labelled]
        stores.meta.put_person(person, {"_id": person, "library": LIBRARY, "name": identity, "merged_into": None})
    stores.meta.update_faces(updates)
    return persons


def search_latencies(
    stores: Connection, queries: NDArray[np.float32], clients: int, seconds: float
) -> dict[str, float]:
    """The store's share of a face search (`Connection.nearest`, as the search route asks) with `clients` at
    once: milliseconds at p50 and p99."""
    times: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(offset: int) -> None:
        n = offset
        while time.monotonic() < stop:
            query = queries[n % len(queries)][None, :]
            start = time.perf_counter()
            stores.nearest(query, 10, LIBRARY)
            with lock:
                times.append(time.perf_counter() - start)
            n += clients

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    ms = np.array(times) * 1000
    return {
        "searches": len(times),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
    }


def model_ms(settings: Settings, photo: Path) -> float:
    """The model's share of a face search: detecting and embedding one upload, median of five."""
    from facecluster.engine.analysis import analyze_uploads
    from facecluster.engine.faces import FaceEngine

    engine = FaceEngine.from_settings(settings)
    data = photo.read_bytes()
    analyze_uploads(engine, [data])
    times = []
    for _ in range(5):
        start = time.perf_counter()
        analyze_uploads(engine, [data])
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 1)


def bench_scale(
    settings: Settings, images: Path, faces: int, *, clients: int = 8, search_s: float = 30.0
) -> dict[str, Any]:
    """Build the library and time every operation on it; see the module's docstring."""
    from facecluster.cluster.commands import run_assignment, run_cluster, run_match
    from facecluster.ingest.maintenance import export_faces
    from facecluster.people.erasure import delete_library, erase
    from facecluster.people.stats import library_stats

    base, persons = central_faces(settings, images)
    rng = np.random.default_rng(0)
    extra = max(1, faces // 100)  # the 1 % that arrive later, twice: for `cluster --incremental`, for `match`
    picks, vectors = grow(base, faces + 2 * extra, rng)
    truth_of = [persons[p] for p in picks]
    results: dict[str, Any] = {"faces": faces, "real_embeddings": len(base)}
    with scratch_data_dir("facecluster-scale-") as data, PeakMemory() as whole:
        run = settings.updated(data_dir=data, progress_interval_s=10.0)
        stores = connect(run)
        written = timed(results, "write", lambda: write_library(stores, 0, vectors[:faces]))
        truth = dict(zip(written, truth_of[:faces], strict=True))
        timed(results, "index", lambda: settle_index(stores))
        with PeakMemory() as peak:
            clustered = timed(results, "cluster", lambda: run_cluster(run, LIBRARY, stores=stores))
        results["cluster_peak_pss_mib"] = round(peak.peak, 1)
        results["cluster_peak_pss_by_process_mib"] = peak.parts
        results["cluster_steps_seconds"] = clustered.steps
        results["bcubed_f"] = bcubed(stores, truth)
        labelled = label_persons(stores, written, truth, 0.01)
        results["labelled_persons"] = len(labelled)
        timed(results, "cluster_dual", lambda: run_cluster(run, LIBRARY, stores=stores, method="dual"))
        results["bcubed_f_dual"] = bcubed(stores, truth)
        results["unindexed_after_cluster"] = unindexed(stores)  # labels live in MongoDB: none moved
        # 1 % new faces clustered into the library as it stands, once the owner has indexed them.
        arrived = write_library(stores, faces, vectors[faces : faces + extra])
        truth |= dict(zip(arrived, truth_of[faces : faces + extra], strict=True))
        settle_index(stores)
        grown = timed(
            results,
            "incremental",
            lambda: run_cluster(run, LIBRARY, stores=stores, method="dual", incremental=True),
        )
        results["incremental_steps_seconds"] = grown.steps
        results["incremental_new_faces"], results["incremental_drift"] = grown.new_faces, grown.drift
        results["bcubed_f_incremental"] = bcubed(stores, truth)
        arrived = write_library(stores, faces + extra, vectors[faces + extra :])
        truth |= dict(zip(arrived, truth_of[faces + extra :], strict=True))
        matched = timed(results, "match", lambda: run_match(run, stores, LIBRARY))
        results["matched"] = {
            "new_faces": len(arrived),
            **{k: v for k, v in vars(matched).items() if isinstance(v, int)},
        }
        enrol_profiles(stores, base, persons, labelled)
        timed(results, "assign", lambda: run_assignment(run, stores, LIBRARY))
        # The faces that arrived for `match` are outside the HNSW index until the owner has built it (in a
        # process of its own, which takes a core): time the statistics and the search once it has, as a user
        # would some minutes later, and say how many points were outside it.
        results["unindexed_before_search"] = unindexed(stores)
        timed(results, "reindex", lambda: settle_index(stores))
        timed(results, "stats", lambda: library_stats(stores.meta, LIBRARY))
        queries = vectors[rng.integers(0, faces, 512)]
        results["search_ms"] = search_latencies(stores, queries, clients, search_s)
        results["search_p50_ms"], results["search_p99_ms"] = results["search_ms"]["p50"], results["search_ms"]["p99"]
        results["search_model_ms"] = model_ms(
            run, next(p for p in sorted(images.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
        )
        results["exported"] = timed(results, "export", lambda: sum(1 for _ in export_faces(stores.meta, LIBRARY)))
        timed(results, "erase", lambda: erase(stores, actor="bench", person_id=labelled[0]))
        timed(results, "library_delete", lambda: delete_library(stores, LIBRARY, actor="bench"))
        with contextlib.suppress(Exception):
            stores.meta.close()
    results["peak_pss_mib"] = round(whole.peak, 1)
    return results


def enrol_profiles(stores: Connection, base: NDArray[np.float32], persons: list[str], labelled: list[str]) -> None:
    """A profile for each labelled person, from a real face of theirs, as enrolment stores it."""
    from facecluster.engine.analysis import FaceResult
    from facecluster.people.profiles import ProfileStore

    store = ProfileStore(stores.meta, stores.profiles, stores.space)
    names = stores.meta.person_names(labelled)
    first = {person: row for row, person in reversed(list(enumerate(persons)))}
    for person in labelled:
        vector = base[first[names[person]]]
        face = FaceResult([0.0, 0.0, 96.0, 96.0], 0.9, [], {"score": 0.8}, vector.tolist())
        store.enrol(f"user-{person}", face, person.encode(), create=True)
