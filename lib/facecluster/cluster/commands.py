"""Clustering, incremental matching and cluster-to-profile assignment as the CLI, the API and jobs run them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from facecluster.cluster.assignment import AssignReport, Strategy, assign_clusters, assign_options
from facecluster.cluster.incremental import run_incremental
from facecluster.cluster.matching import MatchSummary, match_new_faces
from facecluster.cluster.run import Labeller, RunSummary, run_clustering, run_options
from facecluster.cluster.sharded import label_sharded
from facecluster.deployment import init_ray
from facecluster.ingest.sources import validate_library
from facecluster.logs import Progress
from facecluster.settings import Settings
from facecluster.store.connection import Connection, connect


def run_cluster(
    settings: Settings,
    library: str,
    *,
    shards: int = 1,
    stores: Connection | None = None,
    report: Callable[[str], None] | None = None,
    incremental: bool | None = False,
    **overrides: Any,
) -> RunSummary:
    """Cluster a library's stored faces (`facecluster cluster`, the API's inline runs, jobs, whose `report`
    records its progress); overrides as `run_options` takes. `incremental` clusters only the faces stored since
    the last run into the clustering the library has (a library without a run gets a full one). With `shards`
    > 1 a full run is spread over that many Ray actors and tasks across the cluster (`cluster.sharded`). One
    run per library at a time: another one meanwhile is `Busy`."""
    library = validate_library(library)
    stores = stores or connect(settings)
    options = run_options(settings, stores.embedder, stores.version, **overrides)
    label: Labeller | None = None
    if shards > 1:
        init_ray(settings)
        label = partial(label_sharded, settings, shards)
    with (
        stores.meta.library_lock(library, settings.clustering.cluster_lock_s),
        Progress(f"cluster {library}", settings.ingest.progress_interval_s, report) as progress,
    ):
        if incremental and stores.meta.latest_run(library) is not None:
            return run_incremental(stores.meta, stores.vectors, library, options, progress)
        return run_clustering(stores.meta, stores.vectors, library, options, progress, label)


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
    options = run_options(settings, stores.embedder, stores.version, person_threshold=person_threshold)
    library = validate_library(library)
    with stores.meta.library_lock(library, settings.clustering.cluster_lock_s):
        return match_new_faces(
            stores.meta,
            stores.vectors,
            library,
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
    options = assign_options(settings, stores.embedder, strategy=strategy, threshold=threshold)
    library = validate_library(library)
    with stores.meta.library_lock(library):
        return assign_clusters(
            stores.meta,
            stores.vectors,
            stores.profiles,
            library,
            options,
            clustering_id=clustering_id,
            dry_run=dry_run,
            overwrite=overwrite,
            model_version=stores.version,
        )
