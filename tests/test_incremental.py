"""Incremental clustering: new faces join known persons, grow the clusters they belong to and found clusters
of people first seen; human labels stay, cluster ids continue, the library stays consistent when a run is
interrupted, and the result is close to one full run of the same faces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import facecluster.cluster.incremental as incremental
from facecluster.cluster.incremental import LocalGraph
from facecluster.engine.faces import FaceEngine
from facecluster.settings import Settings
from facecluster.store.documents import FaceDoc

LIBRARY = "arrivals"


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, np.float64)
    return vector / np.linalg.norm(vector)


@pytest.mark.fast
def test_the_local_graph_keeps_the_photo_rules() -> None:
    same = _unit(1, 0, 0)
    vectors = np.stack([same, same, _unit(0, 1, 0), _unit(0, 1, 0.05)]).astype(np.float32)
    asked: list[list[str]] = []

    def photos_of(clusters: list[str]) -> dict[str, set[str]]:
        asked.append(clusters)
        return {c: {"shared.jpg"} for c in clusters}

    # Faces 0 and 1 are one photo; face 2's photo has a face in cluster c2.
    graph = LocalGraph(vectors, ["a.jpg", "a.jpg", "b.jpg", "d.jpg"], [[], [], ["c2"], []], photos_of)
    c1 = graph.add_cluster({"_id": "c1", "centroid": same.tolist(), "size": 5, "vector_sum_norm": 4.0})
    c2 = graph.add_cluster({"_id": "c2", "centroid": _unit(0, 1, 0).tolist(), "size": 5})
    joined = graph.join_edges([(0, 1, 1.0), (0, c1, 0.99), (1, c1, 0.98), (2, c2, 0.99), (3, c2, 0.9)], 0.5,
                              clusters_meet=False)  # fmt: skip
    assert joined == 2
    assert graph.find(0) == graph.find(c1) != graph.find(1)  # one face of a photo per cluster
    assert graph.find(2) != graph.find(c2) == graph.find(3)  # face 2's photo already has a face in c2
    assert np.allclose(graph.nodes[graph.find(c1)].total, same * 5.0)  # the stored length of its sum, plus one
    # Two groups that hold clusters merge only when the clusters share no photo: read once, when needed.
    assert not graph.can_join(graph.find(c1), graph.find(c2), -1.0, clusters_meet=False)
    assert asked == []
    assert not graph.can_join(graph.find(c1), graph.find(c2), -1.0, clusters_meet=True)
    assert asked == [["c1", "c2"]]


@pytest.fixture(scope="module")
def arrivals(engine: FaceEngine, lfw_dir: Path) -> dict[str, Any]:
    """Central faces of 10 LFW people with 10+ photos (10 each) and 8 with one. The first batch holds six
    photos each of the first seven people and four of the single ones; the second the rest: more photos of
    those seven, every photo of three people not seen before, four more single ones."""
    from facecluster.eval.verification import embed_central_faces

    folders = sorted((lfw_dir / "images").iterdir())
    rich = [f for f in folders if len(list(f.glob("*.jpg"))) >= 10][:10]
    single = [f for f in folders if len(list(f.glob("*.jpg"))) == 1][:8]
    first = [p for f in rich[:7] for p in sorted(f.glob("*.jpg"))[:6]] + [next(f.glob("*.jpg")) for f in single[:4]]
    second = [p for f in rich[:7] for p in sorted(f.glob("*.jpg"))[6:10]]
    second += [p for f in rich[7:] for p in sorted(f.glob("*.jpg"))[:10]] + [next(f.glob("*.jpg")) for f in single[4:]]
    found = embed_central_faces(engine, first + second)
    batches = []
    for paths in (first, second):
        kept = [p for p in paths if found[p] is not None]
        batches.append((np.stack([found[p] for p in kept]).astype(np.float32), [p.parent.name for p in kept]))
    return {"batches": batches, "known": [f.name for f in rich[:7]], "new": [f.name for f in rich[7:]]}


def _faces(stores: Any) -> dict[str, FaceDoc]:
    fields = ["image", "cluster_id", "person_id", "label_source", "pending"]
    return {f["_id"]: f for f in stores.meta.iter_faces(LIBRARY, fields)}


def _consistent(stores: Any) -> None:
    """No face pending, and every cluster's size is the faces it holds."""
    faces = _faces(stores).values()
    assert not [f for f in faces if f.get("pending")]
    held = Counter(f["cluster_id"] for f in faces if f.get("cluster_id"))
    assert {c["_id"]: c["size"] for c in stores.meta.clusters(LIBRARY)} == held


def _arrive(stores: Any, arrivals: dict[str, Any], truth: dict[str, str], batch: int, start: int) -> list[str]:
    from facecluster.eval.bench_scale import write_library

    vectors, names = arrivals["batches"][batch]
    ids = write_library(stores, start, vectors, LIBRARY, per_photo=1)
    truth |= dict(zip(ids, names, strict=True))
    return ids


@pytest.mark.usefixtures("ray_cluster")
def test_new_faces_join_persons_grow_clusters_and_found_new_ones(
    store_settings: Settings, arrivals: dict[str, Any]
) -> None:
    from facecluster.cluster.commands import run_cluster
    from facecluster.eval.bench_scale import bcubed
    from facecluster.store.connection import connect

    stores = connect(store_settings)
    truth: dict[str, str] = {}
    first = _arrive(stores, arrivals, truth, 0, 0)
    assert all(f.get("pending") for f in _faces(stores).values())  # stored faces wait for a run
    run_cluster(store_settings, LIBRARY, stores=stores, incremental=True)  # no run yet: a full one
    _consistent(stores)
    before = _faces(stores)
    clustered = {
        name: Counter(before[f].get("cluster_id") for f in first if truth[f] == name).most_common(1)[0][0]
        for name in arrivals["known"][1:]
    }
    main = {name: cluster_id for name, cluster_id in clustered.items() if cluster_id}  # six photos may not do
    assert len(main) >= 5 and len(set(main.values())) == len(main)
    # A person names the first person's faces.
    anna = arrivals["known"][0]
    named = [f for f in first if truth[f] == anna]
    stores.meta.update_faces([(f, {"person_id": "per_anna", "label_source": "human"}) for f in named])

    second = _arrive(stores, arrivals, truth, 1, len(first))
    summary = run_cluster(store_settings, LIBRARY, stores=stores, incremental=True, method="dual")
    assert summary.incremental and summary.new_faces == len(second)
    assert summary.drift is not None and 0.0 <= summary.drift <= 0.1
    _consistent(stores)
    after = _faces(stores)
    assert all(after[f]["person_id"] == "per_anna" and after[f]["label_source"] == "human" for f in named)
    later = [f for f in second if truth[f] == anna]
    assert sum(after[f].get("person_id") == "per_anna" for f in later) >= 0.75 * len(later)
    # The clusters of the people seen before grow and keep their ids; the new people get clusters of their own.
    for name in main:
        joined = [after[f].get("cluster_id") for f in second if truth[f] == name]
        assert Counter(joined).most_common(1)[0][0] == main[name], name
    old = {f.get("cluster_id") for f in before.values()}
    for name in arrivals["new"]:
        theirs = Counter(after[f].get("cluster_id") for f in second if truth[f] == name).most_common(1)[0]
        assert theirs[0] not in old and theirs[1] >= 7, (name, theirs)
    run = stores.meta.run(summary.run_id)
    assert run is not None and run["incremental"] and run["finished_at"] is not None
    # Within two points of one full run of the same faces.
    incremental_f = bcubed(stores, truth, LIBRARY)
    run_cluster(store_settings, LIBRARY, stores=stores, method="dual")
    assert incremental_f >= bcubed(stores, truth, LIBRARY) - 0.02


@pytest.mark.usefixtures("ray_cluster")
def test_an_interrupted_run_leaves_a_consistent_library_that_the_next_run_completes(
    store_settings: Settings, arrivals: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facecluster.cluster.commands import run_cluster
    from facecluster.store.connection import connect

    stores = connect(store_settings)
    truth: dict[str, str] = {}
    first = _arrive(stores, arrivals, truth, 0, 0)
    run_cluster(store_settings, LIBRARY, stores=stores)
    second = _arrive(stores, arrivals, truth, 1, len(first))
    written = incremental.write_labels

    def killed(meta: Any, faces: Any, states: dict[str, Any], progress: Any = None) -> None:
        half = dict(list(states.items())[: len(states) // 2])
        written(meta, [f for f in faces if f["_id"] in half], half)
        raise RuntimeError("killed half way")

    monkeypatch.setattr(incremental, "write_labels", killed)
    with pytest.raises(RuntimeError, match="half way"):
        run_cluster(store_settings, LIBRARY, stores=stores, incremental=True)
    monkeypatch.setattr(incremental, "write_labels", written)
    assert [f for f in _faces(stores).values() if f.get("pending")]  # the rest waits for the next run
    summary = run_cluster(store_settings, LIBRARY, stores=stores, incremental=True)
    assert 0 < summary.new_faces < len(second)
    _consistent(stores)
    runs = stores.meta.runs(LIBRARY)
    assert [r.get("interrupted") for r in runs if r.get("incremental")] == [None, True]
    after = _faces(stores)
    for name in arrivals["new"]:
        theirs = Counter(after[f].get("cluster_id") for f in second if truth[f] == name).most_common(1)[0]
        assert theirs[0] is not None and theirs[1] >= 7, (name, theirs)
