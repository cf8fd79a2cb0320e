"""The ingest job on Ray Data.

keys → skip what is done → read + reduced decode + letterbox → detect, align, assess and embed (one model
actor pool, GPU when there is one; all of it in one call of the actor, so photos and crops stay in it;
each actor works on two batches at once: one decodes while the other is in the models) →
write to Qdrant and MongoDB (writer actors) → per-image summaries back to the driver, which counts and
reports progress.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, Dataset

from facecluster.deployment import init_ray
from facecluster.engine.faces import load_detector, load_embedder, min_confidence, model_version
from facecluster.errors import InvalidInput
from facecluster.ingest.sources import S3Options, Source, parse_source, validate_library
from facecluster.ingest.stages import Batch, FaceStage, IngestContext
from facecluster.ingest.writer import Writer
from facecluster.people.erasure import remove_images
from facecluster.settings import Settings
from facecluster.store.connection import Connection, connect

log = logging.getLogger(__name__)


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
    pruned_images: int = 0  # with --prune: photos no longer in the source, removed with their faces
    pruned_faces: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: A block of the listing in the object store (its reference), and its metadata.
ListingBlock = tuple[Any, Any]


def source_dataset(source: Source, s3: S3Options, limit: int | None) -> tuple[Dataset, int]:
    """The source's photos as rows (key, uri, size, etag), and how many there are."""
    if source.kind == "manifest":
        ds = _manifest_dataset(source.location)
        if limit is not None:
            ds = ds.limit(limit)
        return ds, ds.count()
    # The listing goes into the object store block by block as it is read, so the driver holds only the
    # blocks' references: its memory stays flat in the number of keys.
    blocks: list[ListingBlock] = []
    page: list[dict[str, Any]] = []
    listed = 0
    for item in source.items(s3):
        if limit is not None and listed >= limit:
            break
        page.append(asdict(item))
        listed += 1
        if len(page) >= _block_rows(listed):
            blocks.append(_block(page))
            page = []
    if page or not blocks:
        blocks.append(_block(page))
    return _listing_dataset(blocks), listed


def _block(rows: list[dict[str, Any]]) -> ListingBlock:
    """Put rows of the listing into the object store; their metadata is read here, as
    `ray.data.from_items` does (`from_arrow_refs` would start worker processes to read it, seconds
    before the first photo on a cold cluster)."""
    from ray.data.block import BlockMetadataWithSchema

    table = pa.Table.from_pylist(rows, schema=_LISTING)
    return ray.put(table), BlockMetadataWithSchema.from_block(table)


def _listing_dataset(blocks: list[ListingBlock]) -> Dataset:
    """The listing's blocks as a dataset."""
    from facecluster.ingest.ray_internals import materialized_dataset

    return materialized_dataset([ref for ref, _ in blocks], [meta for _, meta in blocks])


_LISTING = pa.schema([("key", pa.string()), ("uri", pa.string()), ("size", pa.int64()), ("etag", pa.string())])


def _block_rows(listed: int) -> int:
    """Small blocks for small sources (the read tasks run in parallel), larger ones as the listing grows."""
    return 16 if listed < 16_384 else 1_024 if listed < 1_048_576 else 65_536


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


def run_ingest(
    settings: Settings,
    source_spec: str,
    *,
    library: str | None = None,
    limit: int | None = None,
    force: bool = False,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Ingest every photo of `source_spec` into `library`; resumable, idempotent. Progress goes to the
    ingest's `jobs` record and to `progress` (else the log) every `progress_interval_s`. With `prune`,
    photos of the library no longer in the source leave it, with their faces and vectors."""
    source = parse_source(source_spec)
    library = validate_library(library or source.default_library)
    if prune and limit is not None:
        raise InvalidInput("--prune needs the whole source: it cannot go with --limit")
    started = time.monotonic()
    init_ray(settings)
    detector, embedder = load_detector(settings), load_embedder(settings)
    stores = connect(settings)
    config, meta, space = stores.config, stores.meta, stores.space
    s3 = S3Options.from_settings(settings)
    ctx = IngestContext(
        # Several model processes share the CPUs here: their ONNX threads sleep rather than spin.
        settings=settings.updated(ort_spinning=False),
        library=library,
        job_id=uuid.uuid4().hex,
        s3=s3,
        mongo_uri=config.mongo_uri,
        detector_version=model_version(settings, detector.spec),
        embedder_version=space.base,
        collection=config.qdrant.collection,
        min_confidence=min_confidence(settings, detector.spec),
        canvas_size=detector.size,
        pad_value=detector.spec.pad_value,
        crop_size=embedder.size,
        alignment=embedder.alignment,
        force=force,
    )
    options = {"limit": limit, "force": force, "detector": ctx.detector_version, "embedder": space.base}
    meta.start_job(ctx.job_id, "ingest", library, source_spec, options)
    summary = IngestSummary(library=library)
    # Qdrant opens (on the embedded default, its owner actor starts) while the photos are listed and the
    # model actors start; an unreachable Qdrant is named from here rather than by a failed writer.
    opening = ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-qdrant")
    qdrant_ready = opening.submit(lambda: (stores.vectors, stores.profiles))
    opening.shutdown(wait=False)
    try:
        ds, total = source_dataset(source, s3, limit)
        log.info("ingest %s into library %r: %d photos (job %s)", source_spec, library, total, ctx.job_id)

        def report(text: str) -> None:
            meta.job_progress(ctx.job_id, text)
            (progress or partial(log.info, "progress: %s"))(text)

        try:
            processed = _execute(_build(ds, ctx, stores, settings), summary, settings, started, report)
        except Exception:
            qdrant_ready.result()  # the store that could not be opened, named, before the workers' failure
            raise
        qdrant_ready.result()
        summary.images = total
        summary.skipped = total - processed
        if prune:
            listed = {str(row["key"]) for row in ds.select_columns(["key"]).iter_rows()}
            summary.pruned_images, summary.pruned_faces = remove_images(stores, library, listed)
    except BaseException as exc:
        meta.finish_job(ctx.job_id, "failed", {"error": str(exc), **summary.to_dict()})
        raise
    summary.seconds = round(time.monotonic() - started, 2)
    summary.images_per_s = round((summary.images - summary.skipped) / summary.seconds, 2) if summary.seconds else 0.0
    meta.finish_job(ctx.job_id, "succeeded", summary.to_dict())
    return summary


#: Batches each model actor works on at once: one is read and decoded while the other is in the models.
CALLS_PER_ACTOR = 2


def face_pool(settings: Settings) -> tuple[ActorPoolStrategy, float, float, int]:
    """The model actors' pool, each actor's CPUs and GPUs and its ONNX threads, from what the cluster has:
    one actor per `face_actor_gpus` share of every GPU; without GPUs, one per 2 CPUs (decoding runs in the
    actors, so they use the cores between model runs). Each actor works on `CALLS_PER_ACTOR` batches at
    once, each with an equal share of this machine's cores as ONNX threads unless `intra_op_threads` says
    otherwise. `face_actors` overrides the count."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 1.0))
    if not os.environ.get("RAY_ADDRESS"):  # this machine's own Ray declares spare logical CPUs: count cores
        cpus = min(cpus, float(os.cpu_count() or 1))
    ingest = settings.ingest

    def pool(smallest: int, largest: int) -> ActorPoolStrategy:
        return ActorPoolStrategy(
            min_size=smallest,
            max_size=largest,
            max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
            enable_true_multi_threading=True,
        )

    if gpus > 0:
        count = ingest.face_actors or max(1, int(gpus / ingest.face_actor_gpus))
        return pool(1, count), 1.0, ingest.face_actor_gpus, 0
    count = ingest.face_actors or max(1, int(cpus // 2))
    threads = settings.models.intra_op_threads or max(1, (os.cpu_count() or 1) // (count * CALLS_PER_ACTOR))
    return pool(count, count), ingest.actor_cpus, 0.0, threads


def _build(ds: Dataset, ctx: IngestContext, stores: Connection, settings: Settings) -> Dataset:
    pool, actor_cpus, actor_gpus, threads = face_pool(settings)
    read_batch = settings.ingest.read_batch_size
    writers = 1 if stores.config.qdrant.local else settings.ingest.write_streams

    return (
        # A class of the stages module, not a closure here: the model actors import only what they run.
        ds.map_batches(
            FaceStage,
            fn_constructor_kwargs={"ctx": replace(ctx, settings=ctx.settings.updated(intra_op_threads=threads))},
            batch_size=read_batch,
            compute=pool,
            num_cpus=actor_cpus,
            num_gpus=actor_gpus,
        ).map_batches(
            Writer,
            fn_constructor_kwargs={
                "ctx": ctx,
                "config": stores.config,
                "embedder": stores.embedder,
                "space": stores.space,
            },
            batch_size=settings.ingest.write_batch_size,
            compute=ActorPoolStrategy(size=writers),
            num_cpus=0.25,
        )
    )


def _execute(
    ds: Dataset, summary: IngestSummary, settings: Settings, started: float, report: Callable[[str], None]
) -> int:
    """Consume the per-image summaries, counting and reporting progress; returns images processed."""
    processed = 0
    last_report = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        status = batch["status"]
        processed += len(status)
        summary.faces += int(batch["faces"].sum())
        summary.no_face += int((status == "no_face").sum())
        summary.failed += int((status == "error").sum())
        if time.monotonic() - last_report >= settings.ingest.progress_interval_s:
            last_report = time.monotonic()
            rate = processed / max(1e-9, last_report - started)
            report(
                f"{processed} images ({rate:.1f}/s), {summary.faces} faces, {summary.no_face} without a face, "
                f"{summary.failed} failed"
            )
    return processed
