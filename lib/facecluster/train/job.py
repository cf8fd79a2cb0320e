"""Training on Ray: the projection head with Ray Train's `TorchTrainer`, the re-projection of every
stored vector with Ray Data, and the switch-over (or rollback) of the active vector version.

`facecluster train`, `jobs/train.py` and `POST /api/v1/faces/train` all call `run_train`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import torch
from ray.data import ActorPoolStrategy
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from facecluster.cluster.run import mend_clusters
from facecluster.deployment import init_ray
from facecluster.engine.projection import VectorSpace, unit, weights_from_bytes, weights_to_bytes
from facecluster.eval.metrics import tar_at_far
from facecluster.people.profiles import ProfileStore
from facecluster.settings import Settings
from facecluster.store.connection import Connection, connect, open_collection
from facecluster.store.documents import face_payload
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import QdrantConfig
from facecluster.store.versions import VersionNotFound, load_space, previous_version, record_space, switch_space
from facecluster.train.trainer import HeadNet, TrainOptions, pk_batches, split_persons, train_epoch, validation_loss

log = logging.getLogger(__name__)
#: Ray Train's controller polls at this interval (seconds); its default of 2 s dominates small runs.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


@dataclass
class TrainReport:
    """What `facecluster train` prints last."""

    version: str
    previous: str
    persons: int
    faces: int
    validation_persons: int
    epochs: int
    best_epoch: int
    train_loss: float  # of the best epoch
    validation_loss_before: float
    validation_loss: float
    validation_tar_before: float
    validation_tar: float
    reprojected: int
    profiles: int
    switched: bool
    checkpoint: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: P×K batches of its share, then the validation loss; rank 0 reports a
    checkpoint every epoch (Ray keeps the best), and patience epochs without a better loss stop it."""
    options = TrainOptions(**config["options"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(options.seed)
    vectors = torch.from_numpy(np.array(config["vectors"])).to(device)  # a writable copy of the shared array
    labels = torch.from_numpy(np.array(config["labels"])).to(device)
    train_rows, val_rows = config["train_rows"], config["val_rows"]
    head = HeadNet(vectors.shape[1], options.hidden)
    net = ray.train.torch.prepare_model(head)
    optimizer = torch.optim.AdamW(net.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    val_vectors, val_labels = vectors[val_rows], labels[val_rows]
    best, stale = float("inf"), 0
    for epoch in range(options.epochs):
        rng = np.random.default_rng(options.seed * 1000 + epoch)
        batches = pk_batches(config["labels"][train_rows], options.persons_per_batch, options.faces_per_person, rng)
        batches = [train_rows[b] for b in batches][rank::world]
        loss = train_epoch(net, optimizer, vectors, labels, batches, options)
        val = validation_loss(head, val_vectors, val_labels, options.margin)
        metrics = {"epoch": epoch + 1, "train_loss": loss, "validation_loss": val}
        log.info("epoch %d: train loss %.5f, validation loss %.6f", epoch + 1, loss, val)
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "head.npz").write_bytes(weights_to_bytes(head.weights()))
                Path(folder, "metrics.json").write_text(json.dumps(metrics))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        best, stale = (val, 0) if val <= best else (best, stale + 1)
        if stale >= options.patience:
            break


def fit_head(
    settings: Settings, vectors: np.ndarray, labels: list[str], options: TrainOptions, name: str
) -> tuple[HeadNet, dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """Train a head with `TorchTrainer`; returns the head of the epoch with the lowest validation
    loss (the checkpoint Ray keeps), that epoch's metrics, and the training and validation rows."""
    train_rows, val_rows = split_persons(
        labels, min_faces=options.min_faces, validation_share=options.validation_share, seed=options.seed
    )
    codes = {label: i for i, label in enumerate(sorted(set(labels)))}
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "options": options.to_dict(),
            "vectors": unit(vectors).astype(np.float32),
            "labels": np.array([codes[label] for label in labels], dtype=np.int64),
            "train_rows": train_rows,
            "val_rows": val_rows,
        },
        scaling_config=ScalingConfig(
            num_workers=settings.training.training_workers,
            use_gpu=resources.get("GPU", 0.0) >= settings.training.training_workers,
            resources_per_worker=None if resources.get("GPU") else {"CPU": 1},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str((settings.general.data_dir / "ray-train").resolve()),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="validation_loss", checkpoint_score_order="min"
            ),
        ),
    )
    result = trainer.fit()
    kept = result.best_checkpoints or []
    if not kept:
        raise RuntimeError(f"training run {name} reported no checkpoint; see its worker logs")
    checkpoint = min(kept, key=lambda pair: float(pair[1]["validation_loss"]))[0]
    with checkpoint.as_directory() as folder:
        head = HeadNet.from_weights(weights_from_bytes(Path(folder, "head.npz").read_bytes()))
        metrics = json.loads(Path(folder, "metrics.json").read_text())
    return head, metrics, (train_rows, val_rows)


def labelled_vectors(stores: Connection, library: str | None) -> tuple[list[str], np.ndarray, list[str]]:
    """Face ids, embedder vectors and person ids of every human-labelled face (of one library or all)."""
    base = stores.own_vectors
    docs = stores.meta.human_labelled_faces(library)
    present = base.ids(library)
    docs = [d for d in docs if d["_id"] in present]
    ids = [d["_id"] for d in docs]
    vectors = base.fetch(ids) if ids else np.zeros((0, stores.space.dim), np.float32)
    return ids, vectors, [str(d["person_id"]) for d in docs]


class _Reproject:
    """A Ray Data stage: one chunk of face ids → their embedder vectors through the head → the target."""

    def __init__(self, settings: Settings, mongo: tuple[str, str], base: QdrantConfig, space: VectorSpace) -> None:
        self.meta = MetaStore(*mongo, attempts=settings.stores.store_retries)
        retries = settings.stores.store_retries
        self.base = open_collection(base, VectorSpace(space.base, space.base, space.dim), attempts=retries)
        self.target = open_collection(base, space, attempts=retries)
        self.space = space

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        ids = [str(i) for i in row["ids"]]
        docs = {d["_id"]: d for d in self.meta.faces_by_id(ids)}
        kept = [i for i in ids if i in docs]  # a vector without a face is check's business
        if kept:
            vectors = self.space.project(self.base.fetch(kept))
            self.target.upsert(kept, vectors, [face_payload(docs[i]) for i in kept])
        return {"points": len(kept)}


def reproject(
    settings: Settings, stores: Connection, space: VectorSpace, *, missing_only: bool = False, chunk: int = 1024
) -> tuple[int, int]:
    """Write every stored face (all libraries; with `missing_only`, those `space` lacks) and every
    profile into `space`'s collections; idempotent: a re-run rewrites the same points, and points of
    faces that are gone are removed."""
    init_ray(settings)
    base = stores.config.qdrant
    target = stores.collection(space)
    ids = sorted(stores.own_vectors.ids())
    todo = sorted(set(ids) - target.ids()) if missing_only else ids
    chunks = [{"ids": todo[i : i + chunk]} for i in range(0, len(todo), chunk)]
    written = 0
    if chunks:
        ds = ray.data.from_items(chunks, override_num_blocks=len(chunks)).map(
            _Reproject,  # type: ignore[arg-type]  # a callable class: Ray builds one per actor
            fn_constructor_kwargs={
                "settings": settings,
                "mongo": (stores.config.mongo_uri, stores.config.mongo_db),
                "base": base,
                "space": space,
            },
            compute=ActorPoolStrategy(min_size=1, max_size=1 if base.local else settings.ingest.write_streams),
            num_cpus=0.25,
        )
        written = sum(int(row["points"]) for row in ds.iter_rows())
    target.delete(sorted(target.ids() - set(ids)))
    count = ProfileStore(stores.meta, stores.collection(space, "profiles"), space).reproject()
    log.info("re-projected %d faces and %d profiles into %s", written, count, space.id)
    return written, count


def run_train(
    settings: Settings,
    *,
    epochs: int | None = None,
    margin: float | None = None,
    min_faces: int | None = None,
    library: str | None = None,
    switch: bool = True,
) -> TrainReport:
    """Train a head on the human-labelled persons, record it, re-project every vector, switch to it."""
    started = time.monotonic()
    init_ray(settings)
    stores = connect(settings)
    options = TrainOptions(
        epochs=epochs or settings.training.training_epochs,
        margin=margin if margin is not None else settings.training.triplet_margin,
        min_faces=min_faces or settings.training.training_min_faces,
        mining=settings.training.training_mining,
    )
    ids, vectors, labels = labelled_vectors(stores, library)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    head_id = f"head-{stamp}-{uuid.uuid4().hex[:6]}"
    base = stores.space.base
    log.info("training %s on %d labelled faces (%s)", head_id, len(ids), options)
    head, metrics, (train_rows, val_rows) = fit_head(settings, vectors, labels, options, head_id)
    identity = HeadNet(vectors.shape[1], options.hidden)
    space = VectorSpace(f"{base}+{head_id}", base, vectors.shape[1], head.weights())
    val_labels = [labels[i] for i in val_rows]
    before, after = unit(vectors[val_rows]).astype(np.float32), space.project(vectors[val_rows])
    val_t = (torch.from_numpy(before), torch.from_numpy(np.unique(val_labels, return_inverse=True)[1]))
    report = TrainReport(
        version=space.id,
        previous=stores.version,
        persons=len({labels[i] for i in train_rows}),
        faces=len(train_rows),
        validation_persons=len(set(val_labels)),
        epochs=options.epochs,
        best_epoch=int(metrics["epoch"]),
        train_loss=round(float(metrics["train_loss"]), 5),
        validation_loss_before=round(validation_loss(identity, *val_t, options.margin), 5),
        validation_loss=round(validation_loss(head, *val_t, options.margin), 5),
        validation_tar_before=round(tar_at_far(before, val_labels), 4),
        validation_tar=round(tar_at_far(after, val_labels), 4),
        reprojected=0,
        profiles=0,
        switched=False,
        checkpoint=str(settings.resolved_heads_dir / head_id),
        seconds=0.0,
    )
    details = {"options": options.to_dict(), "faces": len(ids), "library": library, "report": report.to_dict()}
    save_checkpoint(Path(report.checkpoint), space, details)
    record_space(stores.meta, space, details)
    # Switch only to a head that is no worse than the embedder's own vectors on unseen persons.
    if switch and report.validation_loss <= report.validation_loss_before:
        activated = activate(settings, space.id, stores)
        report.reprojected, report.profiles = activated["reprojected"], activated["profiles"]
        report.previous, report.switched = activated["previous"], True
    report.seconds = round(time.monotonic() - started, 2)
    return report


def save_checkpoint(folder: Path, space: VectorSpace, details: dict[str, Any]) -> None:
    """The head's weights and what it was trained on, under a name the project chooses."""
    assert space.weights is not None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "head.npz").write_bytes(weights_to_bytes(space.weights))
    meta = {"version": space.id, "base": space.base, "dim": space.dim, **details}
    (folder / "head.json").write_text(json.dumps(meta, indent=2, default=str))


def activate(settings: Settings, version: str, stores: Connection | None = None) -> dict[str, Any]:
    """Make a recorded version (or the embedder's own, `base`) the active one: a trained version is
    re-projected first, so it holds every face stored since it was trained, then the pointer switches."""
    init_ray(settings)
    stores = stores or connect(settings)
    base = stores.space.base
    written = profiles = 0
    space = None if version == base else load_space(stores.meta, version)
    if space is not None:
        if space.base != base:
            raise VersionNotFound(f"{version} derives from {space.base}, not from the configured embedder {base}")
        written, profiles = reproject(settings, stores, space)
    replaced = switch_space(stores.meta, base, version)
    if space is not None:  # faces an ingest stored between the re-projection and the switch
        written += reproject(settings, stores, space, missing_only=True)[0]
    switched = connect(settings)  # cluster centroids follow the vectors into the new space
    for library in switched.meta.libraries():
        mend_clusters(switched.meta, switched.vectors, [c["_id"] for c in switched.meta.clusters(library)])
    log.info("active vector version: %s (was %s)", version, replaced)
    return {"version": version, "previous": replaced, "reprojected": written, "profiles": profiles}


def run_rollback(settings: Settings) -> dict[str, Any]:
    """Return to the version that was active before the last switch."""
    init_ray(settings)
    stores = connect(settings)
    return activate(settings, previous_version(stores.meta, stores.space.base), stores)
