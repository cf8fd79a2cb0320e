"""`facecluster bench incremental`: faces arriving in increments, clustered incrementally after each, scored
against one full run of the same faces.

The faces are the central faces of real photos (LFW: each photo's person is known), grown with noisy copies
when `--faces` asks for more, in a random order. A first share is clustered by a full run; the rest arrives
in `--increments` equal parts, each followed by `cluster --incremental` (and, in a second library, by
`match`, the assignment it replaces). Reported: BCubed F after each increment, the seconds each run took, its
`drift` estimate, and at the end the F of one full run on the same faces and how far the incremental
clustering is from it (1 − BCubed agreement). `--pool` adds unclustered faces (distractors far from every
identity) to measure that the cost per new face does not grow with the pool.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.deployment import scratch_data_dir
from facecluster.eval.bench import PeakMemory, grow
from facecluster.eval.bench_scale import bcubed, central_faces, settle_index, timed, write_library
from facecluster.eval.metrics import score_clustering
from facecluster.settings import Settings
from facecluster.store.connection import Connection, connect

log = logging.getLogger(__name__)
INCREMENTAL = "bench/incremental"
MATCHED = "bench/matched"


def distractors(base: NDArray[np.float32], count: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """`count` unit vectors at cosine about 0.3 to random real faces: faces no identity claims (the pool)."""
    sigma = np.sqrt((1 / 0.3**2 - 1) / base.shape[1])
    noisy = base[rng.integers(0, len(base), count)] + rng.normal(0, sigma, (count, base.shape[1]))
    return np.asarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True), np.float32)


def labels_of(stores: Connection, library: str) -> dict[str, str]:
    """Each face's cluster or person (its own id when it has neither)."""
    return {
        f["_id"]: str(f.get("person_id") or f.get("cluster_id") or f["_id"])
        for f in stores.meta.iter_faces(library, ["cluster_id", "person_id"])
    }


def bench_incremental(
    settings: Settings,
    images: Path,
    *,
    faces: int = 0,
    initial: float = 0.5,
    increments: int = 5,
    pool: int = 0,
    match: bool = True,
) -> dict[str, Any]:
    """Run the increments and score them; see the module's docstring."""
    from facecluster.cluster.commands import run_cluster, run_match

    base, persons = central_faces(settings, images)
    rng = np.random.default_rng(0)
    picks, vectors = grow(base, max(faces, len(base)), rng)
    order = rng.permutation(len(vectors))
    vectors, truth_of = vectors[order], [persons[p] for p in picks[order]]
    first = int(initial * len(vectors))
    bounds = np.linspace(first, len(vectors), increments + 1, dtype=int).tolist()
    results: dict[str, Any] = {"faces": len(vectors), "initial": first, "increments": [], "pool": pool}
    libraries = [INCREMENTAL, MATCHED] if match else [INCREMENTAL]
    with scratch_data_dir("facecluster-incremental-") as data, PeakMemory() as whole:
        run = settings.updated(data_dir=data, progress_interval_s=10.0)
        stores = connect(run)
        truth: dict[str, str] = {}
        for library in libraries:
            ids = write_library(stores, 0, vectors[:first], library, per_photo=1)
            truth |= dict(zip(ids, truth_of[:first], strict=True))
            if pool:
                write_library(stores, len(vectors), distractors(base, pool, rng), library, per_photo=1)
            settle_index(stores)
            timed(results, f"initial_{library.split('/')[1]}", partial(run_cluster, run, library, stores=stores))
        for number, (start, stop) in enumerate(itertools.pairwise(bounds), 1):
            step: dict[str, Any] = {"increment": number, "new_faces": stop - start}
            for library in libraries:
                ids = write_library(stores, start, vectors[start:stop], library, per_photo=1)
                truth |= dict(zip(ids, truth_of[start:stop], strict=True))
            # A run's label writes move points out of the embedded store's HNSW index; the owner rebuilds it
            # off the path. Search once it has, as photos arriving minutes after a run would.
            settle_index(stores)
            summary = timed(step, "incremental", lambda: run_cluster(run, INCREMENTAL, stores=stores, incremental=True))
            step |= {"drift": summary.drift, "born": summary.born, "merged": summary.merged}
            step["bcubed_f"] = bcubed(stores, truth, INCREMENTAL)
            if match:
                timed(step, "match", lambda: run_match(run, stores, MATCHED))
                step["bcubed_f_match"] = bcubed(stores, truth, MATCHED)
            log.info("progress: increment %d: %s", number, step)
            results["increments"].append(step)
        results["bcubed_f_incremental"] = results["increments"][-1]["bcubed_f"] if increments else None
        if match:
            results["bcubed_f_match"] = results["increments"][-1]["bcubed_f_match"] if increments else None
        before = labels_of(stores, INCREMENTAL)
        timed(results, "full", lambda: run_cluster(run, INCREMENTAL, stores=stores))
        results["bcubed_f_full"] = bcubed(stores, truth, INCREMENTAL)
        after = labels_of(stores, INCREMENTAL)
        shared = sorted(before.keys() & after.keys())
        agreement = score_clustering([after[f] for f in shared], _numbered([before[f] for f in shared]))
        results["drift_measured"] = round(1.0 - agreement.bcubed_f, 4)
        with contextlib.suppress(Exception):
            stores.meta.close()
    results["peak_pss_mib"] = round(whole.peak, 1)
    return results


def _numbered(labels: list[str]) -> NDArray[np.int64]:
    """Labels as cluster numbers, each face alone in its own when its label is its id."""
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(label, len(numbers)) for label in labels], dtype=np.int64)
