"""Incremental matching: new faces join known persons or existing clusters without re-clustering."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from facecluster.cluster.methods import UNCLUSTERED, match_known
from facecluster.cluster.run import barred_persons, held_in_photo, person_centroids, write_labels
from facecluster.engine.projection import unit
from facecluster.store.meta import Doc, MetaStore
from facecluster.store.vectors import Vectors


@dataclass
class MatchSummary:
    library: str
    considered: int
    to_persons: int
    to_clusters: int
    seconds: float


def match_new_faces(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    *,
    person_threshold: float,
    cluster_threshold: float,
    max_faces: int | None = None,
) -> MatchSummary:
    """Incremental assignment: faces with neither a person nor a cluster go to the most similar known
    person (human-labelled faces' centroid), else to the most similar existing cluster; no re-clustering."""
    started = dt.datetime.now(dt.UTC)
    pending = meta.unlabelled_faces(library, max_faces)
    human = meta.human_labelled_faces(library)
    if not pending:
        return MatchSummary(library, 0, 0, 0, 0.0)
    matrix = unit(vectors.fetch([f["_id"] for f in pending])).astype(np.float32)
    images = [f["image"] for f in pending]
    persons, centroids = (
        person_centroids(
            [str(f["person_id"]) for f in human], unit(vectors.fetch([f["_id"] for f in human])).astype(np.float32)
        )
        if human
        else ([], np.zeros((0, matrix.shape[1]), np.float32))
    )
    # Two faces of one photo never share a person or a cluster: what the photo's other faces hold is barred.
    photos = meta.faces_of_images(library, sorted(set(images)))
    position = {p: i for i, p in enumerate(persons)}
    barred = held_in_photo(photos, pending, "person_id")
    rejected = barred_persons(pending, barred, position)
    to_person, similarity = match_known(matrix, images, centroids, person_threshold, rejected)
    clusters = meta.clusters(library)
    rest = np.flatnonzero(to_person == UNCLUSTERED)
    cluster_centroids = np.asarray([c["centroid"] for c in clusters], np.float32).reshape(
        len(clusters), matrix.shape[1]
    )
    row = {c["_id"]: i for i, c in enumerate(clusters)}
    occupied = held_in_photo(photos, [pending[i] for i in rest], "cluster_id")
    to_cluster, _ = match_known(
        matrix[rest],
        [images[i] for i in rest],
        cluster_centroids,
        cluster_threshold,
        [{row[c] for c in held if c in row} for held in occupied],
    )
    states: dict[str, Doc] = {}
    for index in np.flatnonzero(to_person >= 0).tolist():
        states[pending[index]["_id"]] = {
            "cluster_id": None,
            "person_id": persons[int(to_person[index])],
            "label_source": "auto",
            "person_similarity": round(float(similarity[index]), 4),
        }
    grown: set[str] = set()
    for offset in np.flatnonzero(to_cluster >= 0).tolist():
        cluster_id = clusters[int(to_cluster[offset])]["_id"]
        states[pending[int(rest[offset])]["_id"]] = {"cluster_id": cluster_id, "person_id": None}
        grown.add(cluster_id)
    write_labels(meta, [f for f in pending if f["_id"] in states], states)
    meta.recount_clusters(grown)
    seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return MatchSummary(
        library, len(pending), int((to_person >= 0).sum()), int((to_cluster >= 0).sum()), round(seconds, 3)
    )
