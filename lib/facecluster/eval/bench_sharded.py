"""`facecluster bench sharded`: one library clustered by a full run in one process, then across the Ray
cluster (`cluster --shards N`), one after the other: the seconds of each, the largest process's peak memory
(Ray workers of nodes started apart included), BCubed F of each against the true identities and of one
against the other, and the nodes the shards ran on. Run it with `RAY_ADDRESS` set to a multi-node cluster to
measure a real one; without, it runs on the data directory's own head (one node). The run in one process
gets the machine's cores for its k-NN index, as outside Ray (a job's driver would have one thread)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray

from facecluster.deployment import scratch_data_dir
from facecluster.eval.bench import PeakMemory, grow
from facecluster.eval.bench_incremental import labels_of
from facecluster.eval.bench_scale import LIBRARY, bcubed, central_faces, timed, write_library
from facecluster.eval.metrics import score_clustering
from facecluster.settings import Settings
from facecluster.store.connection import connect


def shard_nodes() -> list[str]:
    """The nodes the latest run's shard actors ran on (from Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "StoredShard")], detail=True, limit=10_000)
    return sorted({str(a.node_id) for a in actors if a.node_id})


@contextlib.contextmanager
def machine_threads() -> Iterator[int]:
    """The machine's cores for the k-NN index of a run in this process, as `facecluster cluster` has them
    outside Ray: a Ray job's driver starts with one OpenMP thread (`OMP_NUM_THREADS=1`)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield faiss.omp_get_max_threads()
    finally:
        faiss.omp_set_num_threads(before)


def bench_sharded(settings: Settings, images: Path, faces: int, shards: int) -> dict[str, Any]:
    """Build the library, cluster it both ways and compare; see the module's docstring."""
    from facecluster.cluster.commands import run_cluster

    base, persons = central_faces(settings, images)
    picks, vectors = grow(base, faces, np.random.default_rng(0))
    results: dict[str, Any] = {"faces": faces, "shards": shards, "real_embeddings": len(base)}
    labels: dict[str, dict[str, str]] = {}
    with scratch_data_dir("facecluster-sharded-") as data:
        run = settings.updated(data_dir=data, progress_interval_s=10.0)
        stores = connect(run)
        written = timed(results, "write", partial(write_library, stores, 0, vectors))
        truth = {face: persons[p] for face, p in zip(written, picks.tolist(), strict=True)}
        del vectors  # the largest process is measured: this one holds no library of its own
        results["nodes"] = len([node for node in ray.nodes() if node["Alive"]])  # type: ignore[no-untyped-call]
        for name, count in (("single", 1), ("sharded", shards)):
            # Each run starts from an unclustered library, so each writes every label.
            stores.meta.unclustered_again(LIBRARY)
            with PeakMemory(ray_workers=True) as peak, machine_threads() as threads:
                summary = timed(results, name, partial(run_cluster, run, LIBRARY, stores=stores, shards=count))
            results[f"{name}_driver_threads"] = threads
            results[f"{name}_steps_seconds"] = summary.steps
            results[f"{name}_largest_process_mib"] = peak.largest
            results[f"{name}_largest_process"] = peak.largest_name
            results[f"{name}_largest_by_process_mib"] = dict(sorted(peak.largest_each.items(), key=lambda p: -p[1]))
            results[f"{name}_peak_pss_mib"] = round(peak.peak, 1)
            results[f"bcubed_f_{name}"] = bcubed(stores, truth)
            labels[name] = labels_of(stores, LIBRARY)
        results["shard_nodes"] = len(shard_nodes())
        order = sorted(labels["single"])
        numbered: dict[str, int] = {}
        sharded = [numbered.setdefault(labels["sharded"][f], len(numbered)) for f in order]
        agreement = score_clustering([labels["single"][f] for f in order], sharded)
        results["agreement_bcubed_f"] = round(agreement.bcubed_f, 4)
        results["time_ratio"] = round(results["sharded_seconds"] / results["single_seconds"], 3)
        results["memory_ratio"] = round(
            results["sharded_largest_process_mib"] / results["single_largest_process_mib"], 3
        )
        with contextlib.suppress(Exception):
            stores.meta.close()
    return results
