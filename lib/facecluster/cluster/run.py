"""A clustering run over one library's stored faces, written back to MongoDB and Qdrant.

Faces a human labelled keep their person (must-links) and seed the known persons; "not this
person" (`rejected_persons`) is a cannot-link. Machine assignments are stored with
`label_source = "auto"` and never count as human labels in later runs. Cluster ids are stable: a
cluster that keeps most of its faces keeps its id.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from facecluster.cluster.knn import knn_graph
from facecluster.cluster.methods import (
    UNCLUSTERED,
    ClusterParams,
    Labels,
    Method,
    cluster,
    label_members,
    match_known,
    stable_ids,
)
from facecluster.engine.projection import unit
from facecluster.engine.registry import EmbedderSpec
from facecluster.logs import Progress
from facecluster.settings import Settings, first_set
from facecluster.store.documents import FaceDoc
from facecluster.store.meta import Doc, MetaStore
from facecluster.store.vectors import Vectors

#: Faces read or written in one request of a run: bounded memory in the client and the servers.
LABEL_CHUNK = 20_000
NOTHING: frozenset[Any] = frozenset()
RunMethod = Literal["dual", "graph", "hdbscan", "dbscan", "agglomerative"]


@dataclass(frozen=True)
class RunOptions:
    method: RunMethod
    unknown: ClusterParams  # the unknown-face method (the method itself unless dual)
    person_threshold: float
    min_quality: float = 0.0
    max_faces: int | None = None
    model_version: str = ""


@dataclass
class RunSummary:
    run_id: str
    method: str
    faces: int
    clusters: int
    persons: int
    unclustered: int
    seconds: float
    kept: int = 0  # faces outside the run's limits (quality, max faces): left as they were
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step
    incremental: bool = False
    new_faces: int = 0  # faces stored since the last run (pending), the ones an incremental run clusters
    born: int = 0  # incremental: clusters made of new and pool faces
    merged: int = 0  # incremental: clusters merged into another
    drift: float | None = None  # incremental: 1 - BCubed agreement with a fresh clustering of what changed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def face_quality(face: Mapping[str, Any]) -> float:
    """A face's quality score (0 when it has none)."""
    return float(face.get("quality", {}).get("score", 0.0))


def _labelled(face: FaceDoc) -> bool:
    return face.get("label_source") == "human" and bool(face.get("person_id"))


def choose_faces(
    faces: Sequence[FaceDoc], min_quality: float, max_faces: int | None
) -> tuple[list[FaceDoc], list[FaceDoc]]:
    """What a run works on: every human-labelled face (they define the known persons) and the other faces
    at or above `min_quality`, best first, so that there are at most `max_faces` in all; ties and the
    labelled faces in `_id` order, so a run does not depend on the order the store returns faces in."""
    human = sorted((f for f in faces if _labelled(f)), key=itemgetter("_id"))
    others = [f for f in faces if not _labelled(f) and face_quality(f) >= min_quality]
    others.sort(key=lambda f: (-face_quality(f), f["_id"]))
    if max_faces is not None:
        others = others[: max(0, max_faces - len(human))]
    return human, others


def face_labels(face: Mapping[str, Any]) -> Doc:
    """A face's cluster and person as they stand."""
    return {"cluster_id": face.get("cluster_id"), "person_id": face.get("person_id")}


def held_in_photo(
    context: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], field: str
) -> list[AbstractSet[str]]:
    """For each target face, the values of `field` (persons or clusters) that other faces of its photo
    hold in `context`: two faces of one photo never share a person or a cluster."""
    by_image: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for face in context:
        if value := face.get(field):
            by_image[str(face["image"])].append((str(face["_id"]), str(value)))
    return [
        frozenset(value for other, value in by_image[str(t["image"])] if other != t["_id"]) or NOTHING for t in targets
    ]


def barred_persons(
    faces: Sequence[Mapping[str, Any]], held: Sequence[AbstractSet[str]], position: Mapping[str, int]
) -> list[AbstractSet[int]]:
    """For each face, the known persons (by `position`) it may not join: those a human said it is not and
    those other faces of its photo `held`. One shared empty set for the faces (nearly all) with none."""
    return [
        frozenset(position[p] for p in {*(f.get("rejected_persons") or []), *barred} if p in position) or NOTHING
        for f, barred in zip(faces, held, strict=True)
    ]


def next_states(
    faces: Sequence[Mapping[str, Any]], auto: dict[str, tuple[str, float]], clusters: dict[str, Sequence[str]]
) -> dict[str, Doc]:
    """Each face's labels after a run: human labels stay; machine ones lapse unless renewed by `auto`
    (face → person, similarity); cluster ids come from `clusters` (cluster → faces) and nothing else."""
    states: dict[str, Doc] = {}
    for face in faces:
        person, source = face.get("person_id"), face.get("label_source")
        state: Doc = {"cluster_id": None, "person_id": person, "label_source": source, "pending": None}
        if source == "auto":
            state.update(person_id=None, label_source=None, person_similarity=None)
        states[face["_id"]] = state
    for face_id, (person, similarity) in auto.items():
        states[face_id].update(person_id=person, label_source="auto", person_similarity=similarity)
    for cluster_id, members in clusters.items():
        for face_id in members:
            states[face_id]["cluster_id"] = cluster_id
    return states


@dataclass
class Labelled:
    """What a run's labelling step gives for the faces it is handed: each one's known person (dual mode; rows of
    the persons' centroids) with its similarity, and the clusters of the others (rows of the faces given) with
    each cluster's sum of unit vectors."""

    assigned: Labels
    similarity: NDArray[np.float32]
    groups: list[list[int]]
    totals: list[NDArray[np.float32]]


@dataclass(frozen=True)
class LabelTask:
    """What a run's labelling step is handed: the faces (ids and photos), the known persons' centroids, the
    threshold to match them at (None: no matching), the persons each face may not join, and the parameters
    of the unknown-face method."""

    ids: Sequence[str]
    images: Sequence[str]
    centroids: NDArray[np.float32]
    person_threshold: float | None
    rejected: Sequence[AbstractSet[int]]
    params: ClusterParams


#: A run's labelling step: in this process (`label_in_process`) or across a Ray cluster (`cluster.sharded`).
Labeller: TypeAlias = Callable[[LabelTask, Progress], Labelled]


def label_in_process(vectors: Vectors, task: LabelTask, progress: Progress) -> Labelled:
    """The labelling step in this process: every vector read, persons matched, the rest clustered."""
    progress.step("reading vectors")
    matrix = read_vectors(vectors, task.ids, progress)
    assigned = np.full(len(task.ids), UNCLUSTERED, dtype=np.int64)
    similarity = np.zeros(len(task.ids), np.float32)
    if task.person_threshold is not None:
        progress.step("matching known persons")
        assigned, similarity = match_known(matrix, task.images, task.centroids, task.person_threshold, task.rejected)
    unknown = np.flatnonzero(assigned == UNCLUSTERED)
    unknown_vectors, params = matrix[unknown], task.params
    progress.step("building the k-NN graph")
    graph = knn_graph(unknown_vectors, params.k) if len(unknown) > 1 else None
    progress.step(f"clustering ({params.method})")
    labels = cluster(unknown_vectors, [task.images[i] for i in unknown.tolist()], params, knn=graph)
    groups = [unknown[members].tolist() for members in label_members(labels)]
    return Labelled(assigned, similarity, groups, [matrix[g].sum(axis=0) for g in groups])


def run_clustering(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    options: RunOptions,
    progress: Progress | None = None,
    label: Labeller | None = None,
) -> RunSummary:
    """One run; `label` is its labelling step (in this process unless a sharded one is given); `progress`
    hears each step."""
    started = time.monotonic()
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    progress = progress or Progress(f"cluster {library}")
    progress.step("reading faces")
    faces = list(progress.counted(meta.clustering_faces(library)))
    human, others = choose_faces(faces, options.min_quality, options.max_faces)
    considered = human + others
    chosen = {f["_id"] for f in considered}
    untouched = [f for f in faces if f["_id"] not in chosen]  # outside the limits: they keep their labels
    person_ids, centroids = person_centroids(
        [str(f["person_id"]) for f in human], read_vectors(vectors, [f["_id"] for f in human])
    )
    position = {p: i for i, p in enumerate(person_ids)}
    # Never a person a human said the face is not, nor one another face of its photo already is.
    taken = held_in_photo([*human, *untouched], others, "person_id")
    rejected = barred_persons(others, taken, position)
    task = LabelTask(
        [f["_id"] for f in others],
        [f["image"] for f in others],
        centroids,
        options.person_threshold if options.method == "dual" else None,
        rejected,
        options.unknown,
    )
    labelled = (label or partial(label_in_process, vectors))(task, progress)
    assigned, similarity = labelled.assigned, labelled.similarity
    groups = [[others[i]["_id"] for i in members] for members in labelled.groups]
    # A cluster with faces outside the limits keeps them and its id; new groups never take it over.
    kept = {str(f["cluster_id"]) for f in untouched if f.get("cluster_id")}
    previous: dict[str, set[str]] = defaultdict(set)
    for face in considered:
        if (cluster_id := face.get("cluster_id")) and cluster_id not in kept:
            previous[cluster_id].add(face["_id"])
    cluster_ids = stable_ids(previous, groups)

    auto = {
        others[index]["_id"]: (person_ids[int(assigned[index])], round(float(similarity[index]), 4))
        for index in np.flatnonzero(assigned >= 0).tolist()
    }
    new_state = next_states(considered, auto, dict(zip(cluster_ids, groups, strict=True)))
    progress.step("writing labels")
    write_labels(meta, considered, new_state, progress)
    progress.step("writing clusters")

    now = dt.datetime.now(dt.UTC)
    everyone = {**{f["_id"]: face_labels(f) for f in untouched}, **new_state}
    docs = cluster_docs(library, run_id, cluster_ids, groups, faces, labelled.totals, everyone, now)
    meta.replace_clusters(library, docs, keep=Counter(str(f["cluster_id"]) for f in untouched if f.get("cluster_id")))
    persons = {s["person_id"] for s in new_state.values() if s.get("person_id")}
    unclustered = sum(1 for s in new_state.values() if not s["person_id"] and not s["cluster_id"])
    progress.step("recording the run")
    summary = RunSummary(
        run_id=run_id,
        method=options.method,
        faces=len(considered),
        clusters=len(groups),
        persons=len(persons),
        unclustered=unclustered,
        seconds=round(time.monotonic() - started, 3),
        kept=len(untouched),
        steps=dict(progress.seconds),
    )
    meta.record_run(
        {
            "_id": run_id,
            "library": library,
            "method": options.method,
            "params": {**asdict(options.unknown), "person_threshold": options.person_threshold,
                       "min_quality": options.min_quality, "max_faces": options.max_faces},
            "model_version": options.model_version,
            "counts": {**summary.to_dict(), "auto_assigned": int((assigned >= 0).sum())},
            "started_at": now - dt.timedelta(seconds=summary.seconds),
            "finished_at": now,
        }
    )  # fmt: skip
    return summary


def person_centroids(persons: list[str], vectors: NDArray[np.float32]) -> tuple[list[str], NDArray[np.float32]]:
    """Known persons (sorted) and their centroids: the normalised mean of their faces' `vectors`."""
    members: dict[str, list[int]] = defaultdict(list)
    for index, person in enumerate(persons):
        members[person].append(index)
    person_ids = sorted(members)
    if not person_ids:
        return [], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 1), np.float32)
    return person_ids, unit(np.stack([vectors[members[p]].sum(axis=0) for p in person_ids])).astype(np.float32)


def read_vectors(vectors: Vectors, ids: Sequence[str], progress: Progress | None = None) -> NDArray[np.float32]:
    """The unit vectors of `ids`, in order, read `LABEL_CHUNK` at a time into one matrix."""
    if not ids:
        return np.zeros((0, 1), np.float32)
    first = unit(vectors.fetch(ids[:LABEL_CHUNK])).astype(np.float32)
    matrix = np.empty((len(ids), first.shape[1]), np.float32)
    matrix[: len(first)] = first
    for start in range(len(first), len(ids), LABEL_CHUNK):
        chunk = ids[start : start + LABEL_CHUNK]
        matrix[start : start + len(chunk)] = unit(vectors.fetch(chunk))
        if progress:
            progress.advance(len(chunk))
    return matrix


def write_labels(
    meta: MetaStore,
    faces: Sequence[Mapping[str, Any]],
    new_state: dict[str, dict[str, Any]],
    progress: Progress | None = None,
) -> None:
    """Write only what changed to MongoDB (the one home of labels), `LABEL_CHUNK` faces at a time."""
    changed: list[tuple[str, dict[str, Any]]] = []
    for face in faces:
        state = new_state[face["_id"]]
        if any(face.get(key) != value for key, value in state.items()):
            changed.append((face["_id"], state))
    for start in range(0, len(changed), LABEL_CHUNK):
        chunk = changed[start : start + LABEL_CHUNK]
        meta.update_faces(chunk)
        if progress:
            progress.advance(len(chunk))


def cluster_docs(
    library: str,
    run_id: str,
    cluster_ids: list[str],
    groups: list[list[str]],
    faces: Sequence[Mapping[str, Any]],
    totals: Sequence[NDArray[np.floating]],
    new_state: dict[str, dict[str, Any]],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Per cluster: size, owner face (best quality), normalised centroid (from `totals`, each group's sum of
    unit vectors), and photo statistics."""
    by_id = {f["_id"]: f for f in faces}
    identities: dict[str, set[str]] = defaultdict(set)  # image -> the clusters and persons in it
    for face_id, state in new_state.items():
        who = state["cluster_id"] or state["person_id"]
        if who:
            identities[by_id[face_id]["image"]].add(who)
    docs = []
    for cluster_id, group, total in zip(cluster_ids, groups, totals, strict=True):
        images = {by_id[f]["image"] for f in group}
        multi = sum(1 for image in images if len(identities[image]) > 1)
        owner = max(group, key=lambda f: face_quality(by_id[f]))
        docs.append(
            {
                "_id": cluster_id,
                "library": library,
                "run_id": run_id,
                "size": len(group),
                "owner_face_id": owner,
                **centroid_fields(total),
                "images": len(images),
                "single_person_images": len(images) - multi,
                "multi_person_images": multi,
                "updated_at": now,
            }
        )
    return docs


def group_totals(
    ids: Sequence[str], matrix: NDArray[np.float32], groups: Sequence[Sequence[str]]
) -> list[NDArray[np.float32]]:
    """Each group's sum of unit vectors, from the rows of `matrix` (one per id)."""
    row = {face_id: i for i, face_id in enumerate(ids)}
    return [matrix[[row[f] for f in group]].sum(axis=0) for group in groups]


def centroid_fields(total: NDArray[np.floating]) -> Doc:
    """A cluster's centroid (the direction of its faces' summed unit vectors) and the sum's length, from
    which an incremental run rebuilds the sum to add faces to it."""
    norm = float(np.linalg.norm(total))
    return {"centroid": [round(float(v), 6) for v in total / max(norm, 1e-12)], "vector_sum_norm": round(norm, 4)}


def mend_clusters(meta: MetaStore, vectors: Vectors, cluster_ids: Iterable[str]) -> int:
    """Clusters whose faces changed (erased, or vectors in another version): size, best-quality owner and
    centroid from the faces they hold now, in `vectors`' space; an empty one goes. How many went."""
    gone = 0
    for cluster_id in sorted(set(cluster_ids)):
        doc = meta.cluster(cluster_id)
        if doc is None:
            continue
        members = meta.faces_in(doc.get("library"), ["quality"], cluster_id=cluster_id, best_first=True)
        if not members:
            meta.put_cluster(cluster_id, None)
            gone += 1
            continue
        total = unit(vectors.fetch([m["_id"] for m in members])).sum(axis=0)
        mended = {**doc, "size": len(members), "owner_face_id": members[0]["_id"]}
        meta.put_cluster(cluster_id, {**mended, **centroid_fields(total)})
    return gone


def run_options(
    settings: Settings,
    spec: EmbedderSpec,
    model_version: str,
    *,
    method: RunMethod | None = None,
    unknown_method: Method | None = None,
    person_threshold: float | None = None,
    min_cluster_size: int | None = None,
    eps: float | None = None,
    threshold: float | None = None,
    max_faces: int | None = None,
    min_quality: float | None = None,
) -> RunOptions:
    """Options of one run: the call's values, else the settings, else the registry's
    calibrated values for the embedding model. `eps` is a cosine distance."""
    chosen = method or settings.clustering.cluster_method
    unknown: Method = (
        (unknown_method or settings.clustering.unknown_clustering_method or spec.unknown_method)
        if chosen == "dual"
        else chosen
    )
    epsilon = eps if eps is not None else settings.clustering.unknown_eps
    calibrated = spec.cluster_thresholds[unknown]
    similarity = threshold if threshold is not None else (1.0 - epsilon if epsilon is not None else calibrated)
    return RunOptions(
        method=chosen,
        unknown=ClusterParams(
            method=unknown,
            threshold=similarity,
            merge_threshold=max(similarity, spec.cluster_merge_threshold),
            min_cluster_size=min_cluster_size or settings.clustering.unknown_min_cluster_size,
        ),
        person_threshold=first_set(
            person_threshold, settings.clustering.person_match_threshold, spec.person_match_threshold
        ),
        min_quality=first_set(min_quality, settings.clustering.cluster_min_quality),
        max_faces=max_faces or settings.clustering.cluster_max_faces,
        model_version=model_version,
    )
