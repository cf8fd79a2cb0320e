"""The long operations that run as Ray jobs: each kind with its typed options and the function that runs it.

The API queues a kind with its options (`facecluster job KIND --id ID --options JSON` becomes the Ray job's
entrypoint, so it shows in the dashboard); the job records its progress and result in MongoDB's `jobs`
collection, where the API reads them. The same functions serve `facecluster pipeline` and friends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from facecluster.errors import InvalidInput
from facecluster.settings import Settings

if TYPE_CHECKING:
    from facecluster.store.connection import Connection

log = logging.getLogger(__name__)

Method = Literal["dual", "graph", "hdbscan", "dbscan", "agglomerative"]
UnknownMethod = Literal["graph", "hdbscan", "dbscan", "agglomerative"]
Strategy = Literal["centroid", "vote"]
#: Called with a one-line account of how far a job has got.
Progress = Callable[[str], None]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


OptionsT = TypeVar("OptionsT", bound=Options)


class ClusterOptions(Options):
    """One clustering run's parameters; unset ones come from the settings, then the embedder's calibration."""

    method: Method | None = None
    person_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    unknown_method: UnknownMethod | None = None
    min_cluster_size: int | None = Field(default=None, ge=2, le=10_000)
    eps: float | None = Field(default=None, gt=0.0, le=2.0)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    max_faces: int | None = Field(default=None, ge=1, le=1_000_000_000)
    min_quality: float | None = Field(default=None, ge=0.0, le=1.0)
    incremental: bool | None = Field(
        default=None,
        description="cluster only the faces stored since the last run into the library's clustering "
        "(default: yes in a pipeline once the library has a run, no in a clustering run)",
    )


class TrainOptions(Options):
    epochs: int | None = Field(default=None, ge=1, le=1000)
    margin: float | None = Field(default=None, gt=0.0, le=1.0)
    min_faces: int | None = Field(default=None, ge=2, le=10_000)
    library: str | None = Field(default=None, description="train on one library's labels (default: all)")
    switch: bool = True


class ClusterJob(Options):
    library: str
    cluster: ClusterOptions = ClusterOptions()


class PipelineJob(Options):
    """Ingest a source, cluster its library, optionally train and re-cluster, then count."""

    source: str
    library: str | None = None
    limit: int | None = Field(default=None, ge=1)
    force: bool = False
    prune: bool = False
    cluster: ClusterOptions = ClusterOptions()
    train: TrainOptions | None = None


class AssignJob(Options):
    libraries: list[str] | None = Field(default=None, description="default: every library", max_length=1000)
    clustering_id: str | None = Field(
        default=None, pattern=r"^run_[0-9a-f]{12}$", description="default: each library's latest run"
    )
    strategy: Strategy | None = None
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    dry_run: bool = False
    overwrite: bool = False


def run_cluster_job(settings: Settings, options: ClusterJob, progress: Progress) -> dict[str, Any]:
    from facecluster.cluster.commands import run_cluster

    return run_cluster(settings, options.library, report=progress, **options.cluster.model_dump()).to_dict()


def run_incremental_job(settings: Settings, options: ClusterJob, progress: Progress) -> dict[str, Any]:
    cluster = options.cluster.model_copy(update={"incremental": True})
    return run_cluster_job(settings, options.model_copy(update={"cluster": cluster}), progress)


def run_train_job(settings: Settings, options: TrainOptions, progress: Progress) -> dict[str, Any]:
    from facecluster.train.job import run_train

    progress("training on the labelled persons")
    return run_train(settings, **options.model_dump()).to_dict()


def run_pipeline(settings: Settings, options: PipelineJob, progress: Progress) -> dict[str, Any]:
    from facecluster.cluster.commands import run_cluster
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.people.stats import library_stats
    from facecluster.store.connection import open_meta
    from facecluster.store.versions import NotEnoughLabels
    from facecluster.train.job import run_train

    ingest = run_ingest(
        settings,
        options.source,
        library=options.library,
        limit=options.limit,
        force=options.force,
        prune=options.prune,
        progress=progress,
    )
    library = ingest.library
    incremental = options.cluster.incremental is not False
    overrides = {**options.cluster.model_dump(), "incremental": incremental, "report": progress}
    result: dict[str, Any] = {
        "ingest": ingest.to_dict(),
        "cluster": run_cluster(settings, library, **overrides).to_dict(),
    }
    if options.train is not None:
        progress("training on the labelled persons")
        try:
            trained = run_train(settings, **options.train.model_dump())
        except NotEnoughLabels as exc:
            log.warning("training skipped: %s", exc)
            result["train"] = {"skipped": str(exc)}
        else:
            result["train"] = trained.to_dict()
            result["recluster"] = run_cluster(settings, library, **{**overrides, "incremental": False}).to_dict()
    result["stats"] = library_stats(open_meta(settings), library)
    return result


def run_assign_job(settings: Settings, options: AssignJob, progress: Progress) -> dict[str, Any]:
    from facecluster.store.connection import connect

    return assign_libraries(settings, connect(settings), options, progress)


def assign_libraries(settings: Settings, stores: Connection, options: AssignJob, progress: Progress) -> dict[str, Any]:
    """Assign the latest clustering of each library (default: all) to profiles; a library that cannot be
    assigned is reported with its error and the others go on."""
    from facecluster.cluster.commands import run_assignment
    from facecluster.errors import FaceclusterError
    from facecluster.ingest.sources import validate_library

    names = options.libraries if options.libraries is not None else stores.meta.libraries()
    reports: list[dict[str, Any]] = []
    for number, name in enumerate(names, 1):
        progress(f"library {number} of {len(names)}: {name}")
        try:
            report = run_assignment(
                settings,
                stores,
                validate_library(name),
                strategy=options.strategy,
                threshold=options.threshold,
                clustering_id=options.clustering_id,
                dry_run=options.dry_run,
                overwrite=options.overwrite,
            )
        except FaceclusterError as exc:
            reports.append({"library": name, "error": str(exc)})
            continue
        reports.append({k: v for k, v in report.to_dict().items() if k != "decisions"})
    return {"libraries": reports}


@dataclass(frozen=True)
class JobKind:
    """A kind of queued job: its options' type and the function that runs it."""

    options: type[Options]
    run: Callable[[Settings, Any, Progress], dict[str, Any]]
    what: str


KINDS: dict[str, JobKind] = {
    "cluster-dual": JobKind(ClusterJob, run_cluster_job, "dual-mode clustering of a library"),
    "cluster-incremental": JobKind(
        ClusterJob, run_incremental_job, "incremental clustering of the faces stored since a library's last run"
    ),
    "train": JobKind(TrainOptions, run_train_job, "triplet fine-tuning, re-projection and switch"),
    "assign-batch": JobKind(AssignJob, run_assign_job, "cluster-to-profile assignment of several libraries"),
    "cluster-bucket-persons": JobKind(PipelineJob, run_pipeline, "ingest, cluster and count a library"),
}


def validated(model: type[OptionsT], raw: str | dict[str, Any]) -> OptionsT:
    """`raw` (JSON text or values) as `model`; values it does not accept are a clear error."""
    try:
        return model.model_validate_json(raw) if isinstance(raw, str) else model.model_validate(raw)
    except ValueError as exc:
        raise InvalidInput(f"bad options: {exc}") from None


def parse_options(kind: str, raw: str | dict[str, Any]) -> Options:
    """The options of a `kind` job, validated; an unknown kind or bad options are a clear error."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return validated(KINDS[kind].options, raw)


def job_library(options: Options) -> str | None:
    """The library a job works on, where it names one."""
    library = getattr(options, "library", None)
    return library if isinstance(library, str) else None


def run_job(settings: Settings, kind: str, options: Options, job_id: str) -> dict[str, Any]:
    """Run a queued job, recording its state, progress and result (or error) under `job_id` in `jobs`."""
    from facecluster.errors import FaceclusterError
    from facecluster.store.connection import open_meta

    meta = open_meta(settings)
    meta.start_job(job_id, kind, job_library(options) or "", "", options.model_dump())

    def progress(text: str) -> None:
        log.info("progress: %s", text)
        meta.job_progress(job_id, text)

    try:
        result = KINDS[kind].run(settings, options, progress)
    except FaceclusterError as exc:
        meta.finish_job(job_id, "failed", {"error": str(exc)})
        raise
    except BaseException as exc:
        meta.finish_job(job_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    meta.finish_job(job_id, "succeeded", result)
    return result
