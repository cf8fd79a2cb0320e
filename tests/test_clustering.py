"""Clustering: metrics by hand, the rules every method obeys, stable ids, methods on real faces."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from facecluster.cluster.knn import knn_graph, knn_rows
from facecluster.cluster.methods import (
    UNCLUSTERED,
    ClusterParams,
    cluster,
    enforce_rules,
    match_known,
    stable_ids,
    unit,
)
from facecluster.engine.faces import FaceEngine
from facecluster.eval.metrics import score_clustering
from facecluster.eval.verification import embed_central_faces
from facecluster.settings import Settings


@pytest.mark.fast
def test_pairwise_and_bcubed_by_hand() -> None:
    # truth: a a a b b ; predicted: {0: a a}, {1: a b b}
    scores = score_clustering(["a", "a", "a", "b", "b"], [0, 0, 1, 1, 1])
    # predicted pairs: 1 + 3 = 4, of which true: (a,a) in 0, (b,b) in 1 = 2; true pairs: 3 + 1 = 4
    assert scores.pairwise_precision == pytest.approx(2 / 4)
    assert scores.pairwise_recall == pytest.approx(2 / 4)
    # BCubed precision: a1,a2: 2/2; a3: 1/3; b1,b2: 2/3 -> (1 + 1 + 1/3 + 2/3 + 2/3) / 5
    assert scores.bcubed_precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    # BCubed recall: a1,a2: 2/3; a3: 1/3; b1,b2: 2/2 -> (2/3 + 2/3 + 1/3 + 1 + 1) / 5
    assert scores.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert scores.clusters == 2 and scores.identities == 2


@pytest.mark.fast
def test_unclustered_faces_count_as_singletons() -> None:
    perfect = score_clustering(["a", "a", "b", "c"], [0, 0, -1, -1])
    assert perfect.pairwise_f == 1.0 and perfect.bcubed_f == 1.0 and perfect.nmi == pytest.approx(1.0)
    split = score_clustering(["a", "a"], [-1, -1])
    assert split.pairwise_recall == 0.0 and split.bcubed_recall == pytest.approx(0.5)


@pytest.mark.fast
def test_same_photo_faces_never_share_a_cluster() -> None:
    vectors = np.array([[1, 0], [0.99, 0.14], [0.98, 0.2], [0.97, 0.24]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = enforce_rules(np.array([0, 0, 0, 0]), vectors, ["p1", "p1", "p2", "p3"], min_cluster_size=2)
    # Centroid direction is about (0.985, 0.17): face 1 is nearer than face 0, so it stays.
    assert labels[1] == 0 and labels[0] == UNCLUSTERED
    assert labels.tolist().count(0) == 3
    assert enforce_rules(np.array([0, 0, 1]), vectors[:3], ["a", "b", "c"], min_cluster_size=2).tolist() == [0, 0, -1]


@pytest.mark.fast
def test_match_known_respects_not_this_person_and_one_face_per_photo() -> None:
    centroids = np.eye(2, dtype=np.float32)
    faces = np.array([[1, 0], [0.9, 0.44], [0.95, 0.31], [0, 1]], np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    assigned, similarity = match_known(faces, ["x", "y", "y", "z"], centroids, 0.5, rejected=[{0}, set(), set(), set()])
    assert assigned[0] == UNCLUSTERED  # a human said face 0 is not person 0
    assert assigned[2] == 0 and assigned[1] == UNCLUSTERED  # photo y: only the better match keeps person 0
    assert assigned[3] == 1 and similarity[3] == pytest.approx(1.0)


@pytest.mark.fast
def test_stable_ids() -> None:
    previous = {"clu_a": {"1", "2", "3", "4"}, "clu_b": {"5", "6"}, "clu_c": {"7", "8", "9"}}
    groups = [["1", "2", "3", "10", "11"], ["5", "6", "12"], ["7", "13"], ["8", "9", "14"]]
    ids = stable_ids(previous, groups)
    assert ids[0] == "clu_a"  # kept 3 of its 4 faces
    assert ids[1] == "clu_b"
    assert ids[3] == "clu_c"  # kept 2 of 3 faces; the group with only 1 of them gets a new id
    assert ids[2].startswith("clu_") and ids[2] not in previous
    assert len(set(ids)) == 4


@pytest.fixture(scope="module")
def lfw_people(engine: FaceEngine, lfw_dir: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Central-face vectors of 8 LFW people with 10+ photos (10 each) and 20 people with one."""
    folders = sorted((lfw_dir / "images").iterdir())
    rich = [f for f in folders if len(list(f.glob("*.jpg"))) >= 10][:8]
    single = [f for f in folders if len(list(f.glob("*.jpg"))) == 1][:20]
    paths = [p for f in rich for p in sorted(f.glob("*.jpg"))[:10]] + [next(f.glob("*.jpg")) for f in single]
    vectors = embed_central_faces(engine, paths)
    kept = [p for p in paths if vectors[p] is not None]
    return np.stack([vectors[p] for p in kept]), [p.parent.name for p in kept], [p.name for p in kept]


@pytest.mark.parametrize("method", ["graph", "hdbscan", "dbscan", "agglomerative"])
def test_each_method_finds_the_people(lfw_people: tuple[np.ndarray, list[str], list[str]], method: str) -> None:
    vectors, names, images = lfw_people
    labels = cluster(vectors, images, ClusterParams(method=method, threshold=0.45))  # type: ignore[arg-type]
    scores = score_clustering(names, labels)
    assert scores.pairwise_precision >= 0.9, scores
    assert scores.pairwise_f >= 0.8, scores
    assert scores.bcubed_f >= 0.85, scores
    # The 20 one-photo people are unclustered, never clusters of their own.
    sizes = Counter(labels[labels >= 0].tolist())
    assert min(sizes.values()) >= 3


def test_knn_graph_matches_brute_force(lfw_people: tuple[np.ndarray, list[str], list[str]]) -> None:
    vectors = lfw_people[0]
    _, similarities = knn_rows(vectors, slice(0, len(vectors)), 5, block_bytes=7 * 4 * len(vectors))  # 7-row blocks
    full = vectors @ vectors.T
    np.fill_diagonal(full, -np.inf)
    expected = np.sort(full, axis=1)[:, ::-1][:, :5]
    assert np.allclose(similarities, expected, atol=1e-5)
    assert np.allclose(knn_graph(vectors, 5).similarities, expected, atol=1e-5)


def _copy_people(lfw_dir: Path, target: Path, people: list[str], photos: slice) -> None:
    for name in people:
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((lfw_dir / "images" / name).glob("*.jpg"))[photos]:
            shutil.copy(path, folder / path.name)


def test_hnsw_graph_finds_the_exact_neighbours(lfw_people: tuple[np.ndarray, list[str], list[str]]) -> None:
    from facecluster.cluster.knn import hnsw_graph

    vectors = unit(lfw_people[0]).astype(np.float32)
    exact, approximate = knn_graph(vectors, 7), hnsw_graph(vectors, 7)
    assert approximate.indices.shape == exact.indices.shape
    assert not (approximate.indices == np.arange(len(vectors))[:, None]).any()  # never itself
    recall = np.mean([len(set(a) & set(e)) / 7 for a, e in zip(approximate.indices, exact.indices, strict=True)])
    assert recall >= 0.98
    assert np.allclose(approximate.similarities[:, 0], exact.similarities[:, 0], atol=1e-5)
    # Above the exact limit, knn_graph is this index.
    assert np.array_equal(knn_graph(vectors, 7, exact_max=10).indices, approximate.indices)


@pytest.mark.usefixtures("ray_cluster")
def test_labels_survive_and_ids_stay_across_runs(store_settings: Settings, lfw_dir: Path, tmp_path: Path) -> None:
    from facecluster.cluster.commands import run_cluster
    from facecluster.ingest.pipeline import run_ingest
    from facecluster.store.connection import open_meta

    people = ["Alejandro_Toledo", "Ariel_Sharon", "Colin_Powell", "Hugo_Chavez"]
    folder = tmp_path / "library"
    _copy_people(lfw_dir, folder, people, slice(0, 12))
    run_ingest(store_settings, str(folder), library="family")
    first = run_cluster(store_settings, "family", method="dual")
    assert first.clusters >= 4 and first.persons == 0

    meta = open_meta(store_settings)
    faces = list(meta.db.faces.find({"library": "family"}))
    by_cluster = Counter(f["cluster_id"] for f in faces if f.get("cluster_id"))
    assert all(count >= 3 for count in by_cluster.values())
    # Each cluster's owner is its best-quality face.
    score = {f["_id"]: f["quality"]["score"] for f in faces}
    for doc in meta.db.clusters.find({"library": "family"}):
        members = [f["_id"] for f in faces if f.get("cluster_id") == doc["_id"]]
        assert score[doc["owner_face_id"]] == max(score[m] for m in members) > 0
    # A human names Colin Powell's cluster and says one of Ariel Sharon's faces is not him.
    powell = [f for f in faces if f["image"].startswith("Colin_Powell/")]
    powell_cluster = Counter(f["cluster_id"] for f in powell).most_common(1)[0][0]
    for face in powell[:6]:
        meta.db.faces.update_one({"_id": face["_id"]}, {"$set": {"person_id": "colin", "label_source": "human"}})
    sharon = next(f for f in faces if f["image"].startswith("Ariel_Sharon/"))
    meta.db.faces.update_one({"_id": sharon["_id"]}, {"$set": {"rejected_persons": ["colin"]}})

    second = run_cluster(store_settings, "family", method="dual")
    after = {f["_id"]: f for f in meta.db.faces.find({"library": "family"})}
    assert all(
        after[f["_id"]]["person_id"] == "colin" and after[f["_id"]]["label_source"] == "human" for f in powell[:6]
    )
    auto = [f for f in after.values() if f.get("label_source") == "auto"]
    assert auto and all(f["person_id"] == "colin" and f["image"].startswith("Colin_Powell/") for f in auto)
    assert after[sharon["_id"]].get("person_id") != "colin"
    assert second.persons == 1

    # More photos of the same people: clusters that keep most of their faces keep their ids.
    kept = {cid for cid in by_cluster if cid != powell_cluster}
    _copy_people(lfw_dir, folder, people, slice(12, 16))
    run_ingest(store_settings, str(folder), library="family")
    run_cluster(store_settings, "family", method="dual")
    now = Counter(f["cluster_id"] for f in meta.db.faces.find({"library": "family"}) if f.get("cluster_id"))
    assert kept <= set(now), f"lost ids: {kept - set(now)}"
    run = meta.db.runs.find_one({"library": "family"}, sort=[("finished_at", -1)])
    assert run is not None and run["method"] == "dual"
    assert run["counts"]["faces"] == meta.db.faces.count_documents({"library": "family"}) > len(after)
