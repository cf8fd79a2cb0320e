"""The ingest job on Ray Data.

keys → skip what is done → read + decode + letterbox (CPU tasks) → detect (actor pool, GPU when
there is one) → align + quality (CPU tasks) → embed (actor pool) → write to Qdrant and MongoDB
(writer actors) → per-image summaries back to the driver, which counts and reports progress.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache, partial
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Dataset

from facecluster.cluster.assignment import AssignReport, Strategy, assign_clusters, assign_options
from facecluster.cluster.knn import KnnGraph, knn_graph, knn_rows
from facecluster.cluster.run import RunSummary, run_clustering, run_options
from facecluster.engine.embedder import FaceEmbedder
from facecluster.engine.faces import load_detector, load_embedder, min_confidence, model_version
from facecluster.engine.projection import VectorSpace
from facecluster.ingest.sources import S3Options, Source, parse_source, validate_library
from facecluster.ingest.stages import (
    Batch,
    DetectStage,
    EmbedStage,
    IngestContext,
    align_batch,
    decode_batch,
    skip_done,
)
from facecluster.ingest.stages import write_batch as store_batch
from facecluster.people.curation import MatchSummary, match_new_faces
from facecluster.settings import Settings
from facecluster.store.embedded import mongo_uri
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import QdrantConfig, QdrantVectors, Vectors, collection_name
from facecluster.store.versions import VersionedVectors, active_space, active_version

log = logging.getLogger(__name__)
NAMESPACE = "facecluster"


def init_ray(settings: Settings) -> None:
    """Attach to `RAY_ADDRESS` when set, else start a local Ray; once per process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS") or "local"
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    ray.init(address=address, namespace=NAMESPACE, logging_level=level, log_to_driver=True)


@dataclass(frozen=True)
class StoreConfig:
    mongo_uri: str
    mongo_db: str
    qdrant: QdrantConfig


def resolve_stores(settings: Settings, *, collection: str, dim: int) -> StoreConfig:
    """The configured MongoDB and Qdrant, or the embedded ones under the data directory."""
    mongo = mongo_uri(settings)
    qdrant = QdrantConfig(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        path=None if settings.qdrant_url else str(settings.data_dir / "qdrant"),
        collection=collection,
        dim=dim,
    )
    return StoreConfig(mongo, settings.mongo_db, qdrant)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class LocalQdrantOwner:
    """The one process that opens Qdrant's local storage; jobs and the API call it by name."""

    def __init__(self, path: str) -> None:
        from qdrant_client import QdrantClient

        self.client = QdrantClient(path=path)
        self.stores: dict[str, QdrantVectors] = {}

    def call(self, config: QdrantConfig, method: str, *args: Any) -> Any:
        store = self.stores.get(config.collection)
        if store is None:
            store = self.stores[config.collection] = QdrantVectors(config, client=self.client)
        return getattr(store, method)(*args)


class OwnedVectors:
    """`Vectors` whose calls run in the `LocalQdrantOwner` actor of the storage folder."""

    def __init__(self, config: QdrantConfig) -> None:
        assert config.path is not None
        name = "facecluster-qdrant-" + hashlib.sha1(config.path.encode(), usedforsecurity=False).hexdigest()[:12]
        self.config = config
        self.owner = LocalQdrantOwner.options(  # type: ignore[attr-defined]
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote(config.path)

    def _call(self, method: str, *args: Any) -> Any:
        return ray.get(self.owner.call.remote(self.config, method, *args))

    def ensure_collection(self) -> None:
        self._call("ensure_collection")

    def upsert(self, ids: Any, vectors: Any, payloads: Any) -> None:
        self._call("upsert", ids, vectors, payloads)

    def delete(self, ids: Any) -> None:
        self._call("delete", ids)

    def ids(self, library: str | None = None) -> set[str]:
        return set(self._call("ids", library))

    def count(self) -> int:
        return int(self._call("count"))

    def fetch(self, ids: Any) -> Any:
        return self._call("fetch", ids)

    def set_payloads(self, updates: Any) -> None:
        self._call("set_payloads", updates)

    def search(self, queries: Any, limit: int, library: str | None = None) -> Any:
        return self._call("search", queries, limit, library)

    def delete_library(self, library: str) -> None:
        self._call("delete_library", library)


def open_vectors(config: QdrantConfig, attempts: int) -> Vectors:
    """A server client of its own, or the single owner of the local storage (Ray must be up)."""
    return OwnedVectors(config) if config.local else QdrantVectors(config, attempts=attempts)


@lru_cache(maxsize=4)
def _meta(uri: str, database: str, attempts: int) -> MetaStore:
    return MetaStore(uri, database, attempts=attempts)


def _skip_done(batch: Batch, ctx: IngestContext) -> Batch:
    return skip_done(batch, ctx, _meta(ctx.mongo_uri, ctx.settings.mongo_db, ctx.settings.store_retries))


class _Writer:
    def __init__(self, ctx: IngestContext, qdrant: QdrantConfig, space: VectorSpace) -> None:
        self.ctx = ctx
        self.qdrant = qdrant
        self.meta = MetaStore(ctx.mongo_uri, ctx.settings.mongo_db, attempts=ctx.settings.store_retries)
        self.space = space
        self.vectors = space_vectors(qdrant, space, ctx.settings.store_retries)

    def __call__(self, batch: Batch) -> Batch:
        if active_version(self.meta, self.space.base) != self.space.id:  # switched while the ingest runs
            self.space = active_space(self.meta, self.space.base, self.space.dim)
            self.vectors = space_vectors(self.qdrant, self.space, self.ctx.settings.store_retries)
        return store_batch(batch, self.ctx, self.meta, self.vectors)


@dataclass
class IngestSummary:
    library: str
    images: int = 0
    faces: int = 0
    no_face: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _source_dataset(source: Source, s3: S3Options, limit: int | None) -> tuple[Dataset, int]:
    """The source's photos as rows (key, uri, size, etag), and how many there are."""
    if source.kind == "manifest":
        ds = _manifest_dataset(source.location)
        if limit is not None:
            ds = ds.limit(limit)
        return ds, ds.count()
    items: list[dict[str, Any]] = []
    for item in source.items(s3):
        if limit is not None and len(items) >= limit:
            break
        items.append(asdict(item))
    blocks = max(1, len(items) // 16)
    return ray.data.from_items(items, override_num_blocks=blocks), len(items)


def _manifest_dataset(path: str) -> Dataset:
    """Parquet or CSV with a `key` (or `uri`) column and optional `size` and `etag`, or plain text."""
    if path.endswith(".parquet"):
        ds = ray.data.read_parquet(path)
    elif path.endswith(".csv"):
        ds = ray.data.read_csv(path)
    else:
        ds = ray.data.read_text(path).filter(lambda row: bool(row["text"].strip()))
    return ds.map_batches(_normalise_manifest, batch_format="numpy")


def _normalise_manifest(batch: Batch) -> Batch:
    column = next((batch[name] for name in ("uri", "key", "text") if name in batch), None)
    if column is None:
        raise ValueError("a manifest needs a 'key' or 'uri' column (or one key per line in a .txt file)")
    uris = np.array([str(value).strip() for value in column], dtype=object)
    size = batch.get("size", np.zeros(len(uris), dtype=np.int64))
    etag = batch.get("etag", np.array([""] * len(uris), dtype=object))
    return {"key": uris, "uri": uris, "size": np.asarray(size, dtype=np.int64), "etag": etag.astype(object)}


def open_stores(settings: Settings) -> tuple[StoreConfig, FaceEmbedder, str]:
    """Store settings for the configured embedder's vectors, the embedder and its version."""
    embedder = load_embedder(settings)
    version = model_version(settings, embedder.spec)
    return (
        resolve_stores(settings, collection=collection_name(version, embedder.dim), dim=embedder.dim),
        embedder,
        version,
    )


@dataclass(frozen=True)
class Connection:
    """Both stores of the configured embedder's active vector version, ready to use."""

    config: StoreConfig  # its Qdrant collection holds the embedder's own vectors
    meta: MetaStore
    vectors: Vectors  # the active version's faces (embedder output in, active space out)
    profiles: Vectors  # profile templates, in a collection of their own
    embedder: FaceEmbedder
    space: VectorSpace

    @property
    def version(self) -> str:
        """The active vector version: the embedder version, or it plus a trained head."""
        return self.space.id

    @property
    def own_vectors(self) -> Vectors:
        """The embedder's own vectors (the base collection), whichever version is active."""
        return self.vectors.base if isinstance(self.vectors, VersionedVectors) else self.vectors


def space_config(base: QdrantConfig, space: VectorSpace, kind: str = "faces") -> QdrantConfig:
    """The Qdrant collection of one vector version."""
    return replace(base, collection=collection_name(space.id, space.dim, kind), dim=space.dim)


def space_vectors(base: QdrantConfig, space: VectorSpace, attempts: int) -> Vectors:
    """Face vectors of `space`: the base collection, or it and the trained version's written together."""
    vectors = open_vectors(base, attempts)
    if not space.trained:
        return vectors
    return VersionedVectors(vectors, open_vectors(space_config(base, space), attempts), space)


def connect(settings: Settings) -> Connection:
    """Open MongoDB and Qdrant (indexes and collections created) at the active vector version; Ray is
    started when the local Qdrant storage needs its owner actor."""
    config, embedder, version = open_stores(settings)
    meta = MetaStore(config.mongo_uri, config.mongo_db, attempts=settings.store_retries)
    meta.ensure_indexes()
    if config.qdrant.local:
        init_ray(settings)
    space = active_space(meta, version, embedder.dim)
    vectors = space_vectors(config.qdrant, space, settings.store_retries)
    profiles = open_vectors(space_config(config.qdrant, space, "profiles"), settings.store_retries)
    for store in (vectors, profiles):
        store.ensure_collection()
    return Connection(config, meta, vectors, profiles, embedder, space)


def current(settings: Settings, stores: Connection) -> Connection:
    """`stores`, or a new connection when another process has switched the active version since."""
    if active_version(stores.meta, stores.space.base) == stores.version:
        return stores
    return connect(settings)


@ray.remote
def _knn_shard(vectors: Any, start: int, stop: int, k: int) -> tuple[Any, Any]:
    return knn_rows(vectors, slice(start, stop), k)


def sharded_knn(vectors: Any, k: int, shards: int) -> KnnGraph:
    """The k-NN graph with its rows computed by `shards` Ray tasks sharing one copy of the vectors."""
    shared = ray.put(vectors)
    bounds = np.linspace(0, len(vectors), shards + 1, dtype=int).tolist()
    parts = ray.get([_knn_shard.remote(shared, a, b, k) for a, b in itertools.pairwise(bounds) if b > a])
    return KnnGraph(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def run_cluster(
    settings: Settings, library: str, *, shards: int = 1, stores: Connection | None = None, **overrides: Any
) -> RunSummary:
    """Cluster a library's stored faces (`facecluster cluster`, the API's inline runs); overrides as
    `run_options` takes. With `shards` > 1 the neighbour search runs as that many Ray tasks. One run
    per library at a time: another one meanwhile is `Busy`."""
    library = validate_library(library)
    stores = stores or connect(settings)
    options = run_options(settings, stores.embedder.spec, stores.version, **overrides)
    neighbours: Callable[[Any, int], KnnGraph] = knn_graph
    if shards > 1:
        init_ray(settings)
        neighbours = partial(sharded_knn, shards=shards)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    with stores.meta.locked(f"clustering of {library}", holder, settings.cluster_lock_s):
        return run_clustering(stores.meta, stores.vectors, library, options, neighbours)


def run_match(
    settings: Settings,
    stores: Connection,
    library: str,
    *,
    person_threshold: float | None = None,
    max_faces: int | None = None,
) -> MatchSummary:
    """Incremental assignment of a library's new faces (`facecluster match`, `POST /api/v1/faces/assign`)
    at the run thresholds the settings and the embedder give."""
    options = run_options(settings, stores.embedder.spec, stores.version, person_threshold=person_threshold)
    return match_new_faces(
        stores.meta,
        stores.vectors,
        validate_library(library),
        person_threshold=options.person_threshold,
        cluster_threshold=options.unknown.merge_threshold,
        max_faces=max_faces,
    )


def run_assignment(
    settings: Settings,
    stores: Connection,
    library: str,
    *,
    strategy: Strategy | None = None,
    threshold: float | None = None,
    clustering_id: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
) -> AssignReport:
    """Assign a library's clusters to profiles (`facecluster assign`, `POST /assignments/…`)."""
    options = assign_options(settings, stores.embedder.spec, strategy=strategy, threshold=threshold)
    return assign_clusters(
        stores.meta,
        stores.vectors,
        stores.profiles,
        validate_library(library),
        options,
        clustering_id=clustering_id,
        dry_run=dry_run,
        overwrite=overwrite,
        model_version=stores.version,
    )


def run_ingest(
    settings: Settings, source_spec: str, *, library: str | None = None, limit: int | None = None, force: bool = False
) -> IngestSummary:
    """Ingest every photo of `source_spec` into `library`; resumable, idempotent."""
    source = parse_source(source_spec)
    library = validate_library(library or source.default_library)
    started = time.monotonic()
    init_ray(settings)
    detector = load_detector(settings)
    stores = connect(settings)
    meta, embedder, embedder_version = stores.meta, stores.embedder, stores.space.base
    s3 = S3Options.from_settings(settings)
    ctx = IngestContext(
        # Several model processes share the CPUs here: their ONNX threads sleep rather than spin.
        settings=settings.model_copy(update={"ort_spinning": False}),
        library=library,
        job_id=uuid.uuid4().hex,
        s3=s3,
        mongo_uri=stores.config.mongo_uri,
        detector_version=model_version(settings, detector.spec),
        embedder_version=embedder_version,
        collection=stores.config.qdrant.collection,
        min_confidence=min_confidence(settings, detector.spec),
        canvas_size=detector.size,
        pad_value=detector.spec.pad_value,
        crop_size=embedder.size,
        alignment=embedder.alignment,
        force=force,
    )
    options = {"limit": limit, "force": force, "detector": ctx.detector_version, "embedder": embedder_version}
    meta.start_job(ctx.job_id, "ingest", library, source_spec, options)
    summary = IngestSummary(library=library)
    try:
        ds, total = _source_dataset(source, s3, limit)
        log.info("ingest %s into library %r: %d photos (job %s)", source_spec, library, total, ctx.job_id)
        processed = _execute(_build(ds, ctx, stores, settings), summary, settings, started)
        summary.images = total
        summary.skipped = total - processed
    except BaseException as exc:
        meta.finish_job(ctx.job_id, "failed", {"error": str(exc), **summary.to_dict()})
        raise
    summary.seconds = round(time.monotonic() - started, 2)
    summary.images_per_s = round((summary.images - summary.skipped) / summary.seconds, 2) if summary.seconds else 0.0
    meta.finish_job(ctx.job_id, "succeeded", summary.to_dict())
    return summary


def _build(ds: Dataset, ctx: IngestContext, stores: Connection, settings: Settings) -> Dataset:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 1.0))

    def pool(count: int, gpu_share: float) -> tuple[ActorPoolStrategy, float, float]:
        """An actor pool and each actor's (CPUs, GPUs): a GPU share when there are GPUs, else a CPU share."""
        if gpus > 0:
            return ActorPoolStrategy(min_size=1, max_size=count or max(1, int(gpus / gpu_share))), 1.0, gpu_share
        return ActorPoolStrategy(min_size=1, max_size=count or max(1, int(cpus // 4))), settings.actor_cpus, 0.0

    detect_pool, detect_cpus, detect_gpus = pool(settings.detector_actors, settings.detector_gpus)
    embed_pool, embed_cpus, embed_gpus = pool(settings.embedder_actors, settings.embedder_gpus)
    qdrant = stores.config.qdrant
    writers = 1 if qdrant.local else settings.write_streams

    def skip(batch: Batch) -> Batch:
        return _skip_done(batch, ctx)

    def decode(batch: Batch) -> Batch:
        return decode_batch(batch, ctx)

    def align(batch: Batch) -> Batch:
        return align_batch(batch, ctx)

    return (
        ds.map_batches(skip, batch_size=settings.read_batch_size, num_cpus=0.1)
        .map_batches(decode, batch_size=settings.read_batch_size, num_cpus=settings.task_cpus)
        .map_batches(
            DetectStage,
            fn_constructor_kwargs={"ctx": ctx},
            batch_size=settings.detect_batch_size * 2,
            compute=detect_pool,
            num_cpus=detect_cpus,
            num_gpus=detect_gpus,
        )
        .map_batches(align, batch_size=settings.read_batch_size, num_cpus=settings.task_cpus)
        .map_batches(
            EmbedStage,
            fn_constructor_kwargs={"ctx": ctx},
            batch_size=settings.read_batch_size * 2,
            compute=embed_pool,
            num_cpus=embed_cpus,
            num_gpus=embed_gpus,
        )
        .map_batches(
            _Writer,
            fn_constructor_kwargs={"ctx": ctx, "qdrant": qdrant, "space": stores.space},
            batch_size=settings.write_batch_size,
            compute=ActorPoolStrategy(size=writers),
            num_cpus=0.25,
        )
    )


def _execute(ds: Dataset, summary: IngestSummary, settings: Settings, started: float) -> int:
    """Consume the per-image summaries, counting and logging progress; returns images processed."""
    processed = 0
    last_report = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        status = batch["status"]
        processed += len(status)
        summary.faces += int(batch["faces"].sum())
        summary.no_face += int((status == "no_face").sum())
        summary.failed += int((status == "error").sum())
        if time.monotonic() - last_report >= settings.progress_interval_s:
            last_report = time.monotonic()
            rate = processed / max(1e-9, last_report - started)
            log.info(
                "progress: %d images (%.1f/s), %d faces, %d without a face, %d failed",
                processed, rate, summary.faces, summary.no_face, summary.failed,
            )  # fmt: skip
    return processed
