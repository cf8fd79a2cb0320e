"""Incremental clustering: the faces stored since the last run join known persons, existing clusters or new
ones, with work and memory that grow with the new faces and their neighbourhoods, never with the library.

New faces are those an ingest stored as `pending`. Each is searched for its nearest faces in the vector
store's index: clustered neighbours bring their clusters, unclustered ones (the pool) join the local graph
with their own neighbours, and in dual mode the persons among the neighbours are matched first, by the
centroids of their human-labelled faces. The local graph is then clustered by the graph method's rules (edges
strongest first, centroid linkage, never two faces of one photo), with each existing cluster a group already
formed: clusters grow, merge when their centroids meet, and new ones are born from new and pool faces. Human
labels are never changed. Each run re-clusters a sample of the neighbourhoods it changed from scratch and
reports the disagreement as `drift`: how far the library has moved from what a full run would give there.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from facecluster.cluster.knn import knn_graph
from facecluster.cluster.methods import UNCLUSTERED, cluster, match_known
from facecluster.cluster.run import (
    RunOptions,
    RunSummary,
    barred_persons,
    centroid_fields,
    face_labels,
    face_quality,
    held_in_photo,
    mend_clusters,
    person_centroids,
    read_vectors,
    write_labels,
)
from facecluster.engine.projection import unit
from facecluster.logs import Progress
from facecluster.store.documents import ClusterDoc, FaceDoc
from facecluster.store.meta import RUN_FIELDS, Doc, MetaStore
from facecluster.store.vectors import Hit, Vectors

#: Rounds of centroid merging after the edges are joined (a full run repeats until none merge; here the
#: groups are few and a second round rarely merges anything).
MERGE_ROUNDS = 3
#: Faces of the changed neighbourhoods re-clustered from scratch to measure `drift`.
DRIFT_SAMPLE = 5_000


def cluster_sum(doc: ClusterDoc) -> NDArray[np.float64]:
    """The sum of a cluster's unit vectors, from its centroid and the sum's length (its size for a cluster
    written before the length was stored)."""
    return np.asarray(doc["centroid"], np.float64) * float(doc.get("vector_sum_norm") or doc.get("size") or 1)


@dataclass
class _Node:
    """A group of the local graph: local faces (by row) and existing clusters (by id)."""

    total: NDArray[np.float64]  # the sum of its members' unit vectors
    rows: list[int] = field(default_factory=list)
    clusters: set[str] = field(default_factory=set)
    photos: set[str] = field(default_factory=set)  # photos of its local faces
    barred: set[str] = field(default_factory=set)  # clusters other faces of those photos are in

    @property
    def weight(self) -> int:
        return len(self.rows) + len(self.clusters)


class LocalGraph:
    """Union-find over the local faces and the clusters they touch, with the rules of `methods.graph_labels`.
    Two groups that both hold clusters join only when those clusters share no photo (`photos_of` reads them
    from the store when first needed)."""

    def __init__(
        self,
        vectors: NDArray[np.float32],
        photos: Sequence[str],
        barred: Sequence[Iterable[str]],
        photos_of: Callable[[list[str]], Mapping[str, AbstractSet[str]]],
    ) -> None:
        self.photos_of = photos_of  # the photos of some clusters, from the store
        self.nodes = [
            _Node(np.asarray(v, np.float64), [row], set(), {photo}, set(held))
            for row, (v, photo, held) in enumerate(zip(vectors, photos, barred, strict=True))
        ]
        self.parent = list(range(len(self.nodes)))
        self.of_cluster: dict[str, int] = {}
        self.cluster_photos: dict[str, AbstractSet[str]] = {}

    def add_cluster(self, doc: ClusterDoc) -> int:
        """The node of an existing cluster, its sum of unit vectors rebuilt from its centroid."""
        if doc["_id"] in self.of_cluster:
            return self.of_cluster[doc["_id"]]
        self.nodes.append(_Node(cluster_sum(doc), [], {doc["_id"]}))
        self.parent.append(len(self.parent))
        self.of_cluster[doc["_id"]] = len(self.nodes) - 1
        return self.of_cluster[doc["_id"]]

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def similarity(self, a: int, b: int) -> float:
        first, second = self.nodes[a].total, self.nodes[b].total
        return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second) + 1e-12))

    def can_join(self, a: int, b: int, min_similarity: float, *, clusters_meet: bool) -> bool:
        first, second = self.nodes[a], self.nodes[b]
        if not first.photos.isdisjoint(second.photos):
            return False
        if not first.barred.isdisjoint(second.clusters) or not second.barred.isdisjoint(first.clusters):
            return False
        if first.clusters and second.clusters:
            if not clusters_meet or self.similarity(a, b) < min_similarity:
                return False
            self.read_photos(first.clusters | second.clusters)
            seen = set().union(*(self.cluster_photos[c] for c in first.clusters))
            return all(seen.isdisjoint(self.cluster_photos[c]) for c in second.clusters)
        return self.similarity(a, b) >= min_similarity

    def read_photos(self, clusters: Iterable[str]) -> None:
        """The photos of `clusters` not read yet, in one query."""
        missing = sorted({c for c in clusters if c not in self.cluster_photos})
        if missing:
            self.cluster_photos.update(self.photos_of(missing))

    def join(self, a: int, b: int) -> None:
        if len(self.nodes[a].rows) + len(self.nodes[a].clusters) < len(self.nodes[b].rows) + len(
            self.nodes[b].clusters
        ):
            a, b = b, a
        first, second = self.nodes[a], self.nodes[b]
        self.parent[b] = a
        first.total = first.total + second.total
        first.rows += second.rows
        first.clusters |= second.clusters
        first.photos |= second.photos
        first.barred |= second.barred
        self.nodes[b] = _Node(np.zeros_like(second.total))

    def join_edges(self, edges: Iterable[tuple[int, int, float]], min_similarity: float, *, clusters_meet: bool) -> int:
        """Join along `edges` (node, node, similarity), strongest first, where the rules allow; how many joins."""
        joined = 0
        for a, b, _ in sorted(edges, key=lambda edge: -edge[2]):
            ra, rb = self.find(a), self.find(b)
            if ra != rb and self.can_join(ra, rb, min_similarity, clusters_meet=clusters_meet):
                self.join(ra, rb)
                joined += 1
        return joined

    def roots(self) -> list[int]:
        return sorted({self.find(i) for i in range(len(self.nodes))})

    def groups(self) -> list[_Node]:
        """The groups that hold a local face."""
        return [self.nodes[r] for r in self.roots() if self.nodes[r].rows]


@dataclass
class Neighbourhood:
    """The local faces (new faces first, then pool faces), their documents and vectors, the hits of each, and
    what a run reads of every face hit (its labels among it: MongoDB holds them, the vectors do not)."""

    faces: list[FaceDoc]
    vectors: NDArray[np.float32]
    hits: list[list[Hit]]
    seen: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [f["_id"] for f in self.faces]

    def read(self, meta: MetaStore, hits: Iterable[Sequence[Hit]]) -> None:
        """Read the faces of `hits` not read yet, in pages by `_id`."""
        missing = sorted({hit.id for row in hits for hit in row} - self.seen.keys())
        self.seen.update((f["_id"], f) for f in meta.faces_by_id(missing, RUN_FIELDS))

    def labelled(self, hits: Iterable[Sequence[Hit]], field: str) -> list[str]:
        """The clusters or persons (`field`) of the faces hit, as read."""
        return sorted({str(v) for row in hits for hit in row if (v := self.seen.get(hit.id, {}).get(field))})


def gather(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    new: list[FaceDoc],
    k: int,
    threshold: float,
) -> Neighbourhood:
    """The new faces' neighbourhoods: their hits, the pool faces among them at `threshold` or more, the hits
    of those in turn and the pool faces among these (two hops: a pool face links new faces to the pool beyond)."""
    matrix = read_vectors(vectors, [f["_id"] for f in new]) if new else np.zeros((0, 1), np.float32)
    local = Neighbourhood(list(new), matrix, vectors.search(matrix, k + 1, library, payload=False) if new else [])
    frontier, known = local.hits, {f["_id"] for f in new}
    for hop in (1, 2):
        local.read(meta, frontier)
        pool = {
            hit.id
            for row in frontier
            for hit in row
            if hit.similarity >= threshold and hit.id not in known and hit.id in local.seen
        }
        found = [cast(FaceDoc, local.seen[f]) for f in sorted(pool) if not _has_label(local.seen[f])]
        if not found:
            break
        more = read_vectors(vectors, [f["_id"] for f in found])
        local.faces += found
        known.update(f["_id"] for f in found)
        local.vectors = np.concatenate([local.vectors, more]).astype(np.float32)
        frontier = vectors.search(more, k + 1, library, payload=False) if hop == 1 else [[] for _ in found]
        local.hits += frontier
    local.read(meta, frontier)
    return local


def _has_label(face: Mapping[str, Any]) -> bool:
    return bool(face.get("cluster_id") or face.get("person_id"))


def run_incremental(
    meta: MetaStore, vectors: Vectors, library: str, options: RunOptions, progress: Progress
) -> RunSummary:
    """Cluster the library's pending faces into the clustering it has; see the module's docstring."""
    started = time.monotonic()
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    now = dt.datetime.now(dt.UTC)
    for interrupted in meta.unfinished_runs(library):
        progress.step(f"mending the clusters of the interrupted run {interrupted['_id']}")
        mend_clusters(meta, vectors, interrupted.get("clusters") or [])
        meta.finish_run(str(interrupted["_id"]), {"finished_at": now, "interrupted": True})
    progress.step("reading new faces")
    pending = meta.pending_faces(library)
    new = sorted(
        (f for f in pending if not _has_label(f) and face_quality(f) >= options.min_quality), key=lambda f: f["_id"]
    )
    params = options.unknown
    progress.step(f"searching the neighbours of {len(new):,} new faces")
    local = gather(meta, vectors, library, new, params.k, params.threshold)
    ids, row_of = local.ids, {face_id: row for row, face_id in enumerate(local.ids)}
    images = [str(f["image"]) for f in local.faces]
    progress.step(f"reading the photos of {len(ids):,} faces")
    photos = meta.faces_of_images(library, sorted(set(images)))
    auto: dict[int, tuple[str, float]] = {}
    if options.method == "dual" and ids:
        progress.step("matching known persons")
        auto = _match_persons(meta, vectors, library, local, photos, options.person_threshold)

    progress.step("joining the local graph")
    # The graph holds the local faces no person took: node i is the local face `rows[i]`.
    rows = [row for row in range(len(ids)) if row not in auto]
    node_of = {row: node for node, row in enumerate(rows)}
    barred = held_in_photo(photos, [local.faces[row] for row in rows], "cluster_id")
    graph = LocalGraph(
        local.vectors[rows], [images[row] for row in rows], barred, partial(meta.cluster_photos, library)
    )
    cluster_docs = {d["_id"]: d for d in meta.clusters_by_id(local.labelled(local.hits, "cluster_id"))}
    for doc in cluster_docs.values():
        graph.add_cluster(doc)
    edges: list[tuple[int, int, float]] = []
    for node, row in enumerate(rows):
        for hit in local.hits[row]:
            if hit.similarity < params.threshold:
                continue
            other = row_of.get(hit.id)
            if other is not None and other != row and other in node_of:
                edges.append((node, node_of[other], hit.similarity))
            elif other is None and (cluster_id := local.seen.get(hit.id, {}).get("cluster_id")) in graph.of_cluster:
                edges.append((node, graph.of_cluster[str(cluster_id)], hit.similarity))
    graph.join_edges(edges, params.threshold, clusters_meet=False)
    progress.step("merging close groups")
    _merge(meta, vectors, library, local, graph, cluster_docs, params.merge_threshold, params.k)
    outcome = _outcome(graph, cluster_docs, params.min_cluster_size, rows)

    progress.step("writing labels")
    into = {old: target for target, olds in outcome.absorbed.items() for old in olds}
    moved = meta.clustered_faces(library, sorted(into), fields=["cluster_id", "person_id"]) if into else []
    faces: dict[str, Mapping[str, Any]] = {f["_id"]: f for f in [*pending, *local.faces, *moved]}
    # Pending faces lose the flag and keep what labels they have; the others change only where a group took them.
    states: dict[str, Doc] = {f["_id"]: {"pending": None, **face_labels(f)} for f in pending}
    for face in moved:
        states[face["_id"]] = {"cluster_id": into[str(face["cluster_id"])], "person_id": face.get("person_id")}
    for row, (person, similarity) in auto.items():
        states.setdefault(ids[row], {}).update(
            cluster_id=None, person_id=person, label_source="auto", person_similarity=similarity
        )
    for cluster_id, gained in outcome.members.items():
        for row in gained:
            states.setdefault(ids[row], {}).update(cluster_id=cluster_id, person_id=None)
    docs = _cluster_docs(meta, library, run_id, now, local, cluster_docs, outcome, photos, states)
    meta.record_run(
        {
            "_id": run_id, "library": library, "method": options.method, "incremental": True,
            "params": {"k": params.k, "threshold": params.threshold, "merge_threshold": params.merge_threshold,
                       "min_cluster_size": params.min_cluster_size, "person_threshold": options.person_threshold},
            "model_version": options.model_version, "clusters": sorted({*docs, *into}), "started_at": now,
            "finished_at": None,
        }
    )  # fmt: skip
    # Clusters first, then faces, then the merged clusters go: a run stopped anywhere leaves no face in a
    # cluster that does not exist, and the next run mends the sizes of the clusters recorded above.
    meta.write_clusters(list(docs.values()))
    write_labels(meta, [faces[f] for f in states], states, progress)
    meta.write_clusters([], gone=sorted(into))

    progress.step("measuring drift")
    sizes = {cluster_id: int(doc["size"]) for cluster_id, doc in docs.items()}
    drift = estimate_drift(meta, vectors, library, local, states, sizes, options)
    left = [f for f in new if not states[f["_id"]].get("cluster_id") and not states[f["_id"]].get("person_id")]
    summary = RunSummary(
        run_id=run_id,
        method=options.method,
        faces=len(ids),
        clusters=len(outcome.members),
        persons=len({person for person, _ in auto.values()}),
        unclustered=len(left),
        seconds=round(time.monotonic() - started, 3),
        steps=dict(progress.seconds),
        incremental=True,
        new_faces=len(new),
        born=len(outcome.born),
        merged=len(into),
        drift=drift,
    )
    meta.finish_run(run_id, {"finished_at": dt.datetime.now(dt.UTC), "counts": summary.to_dict()})
    return summary


def _match_persons(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    local: Neighbourhood,
    photos: Sequence[FaceDoc],
    threshold: float,
) -> dict[int, tuple[str, float]]:
    """Dual mode's first phase over the local faces, against the persons among their neighbours: row →
    (person, similarity)."""
    candidates = local.labelled(local.hits, "person_id")
    human = meta.human_labelled_faces(library, candidates) if candidates else []
    if not human:
        return {}
    persons, centroids = person_centroids(
        [str(f["person_id"]) for f in human], read_vectors(vectors, [f["_id"] for f in human])
    )
    position = {p: i for i, p in enumerate(persons)}
    rejected = barred_persons(local.faces, held_in_photo(photos, local.faces, "person_id"), position)
    images = [str(f["image"]) for f in local.faces]
    assigned, similarity = match_known(local.vectors, images, centroids, threshold, rejected)
    return {
        row: (persons[int(assigned[row])], round(float(similarity[row]), 4))
        for row in np.flatnonzero(assigned != UNCLUSTERED).tolist()
    }


def _merge(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    local: Neighbourhood,
    graph: LocalGraph,
    cluster_docs: dict[str, ClusterDoc],
    threshold: float,
    k: int,
) -> None:
    """Groups whose centroids are at `threshold` or more merge, as a full run's second phase does: the
    changed groups with each other and with the clusters nearest their centroids."""
    for _ in range(MERGE_ROUNDS):
        changed = [r for r in graph.roots() if graph.nodes[r].rows]
        if not changed:
            return
        # The clusters near a lone face are among its hits already; a grown group's centroid has moved.
        grown = [r for r in changed if graph.nodes[r].weight > 1]
        centroids = unit(np.stack([graph.nodes[r].total for r in grown])).astype(np.float32) if grown else None
        hits = vectors.search(centroids, k, library, payload=False) if centroids is not None else []
        local.read(meta, hits)
        near = local.labelled(hits, "cluster_id")
        for doc in meta.clusters_by_id([c for c in near if c not in cluster_docs]):
            cluster_docs[doc["_id"]] = doc
            graph.add_cluster(doc)
        roots = graph.roots()
        if len(roots) < 2:
            return
        matrix = unit(np.stack([graph.nodes[r].total for r in roots])).astype(np.float32)
        first, second, scores = knn_graph(matrix, min(k, len(roots) - 1)).edges(threshold)
        moving = set(changed)
        edges = [
            (roots[a], roots[b], s)
            for a, b, s in zip(first.tolist(), second.tolist(), scores.tolist(), strict=True)
            if roots[a] in moving or roots[b] in moving
        ]
        # The clusters that may meet (joins along these edges bring any of them together), read in one query
        # rather than one per pair: each query on the faces' cluster ids costs a scan of the library.
        graph.read_photos(c for a, b, _ in edges for c in graph.nodes[a].clusters | graph.nodes[b].clusters)
        if not graph.join_edges(edges, threshold, clusters_meet=True):
            return


@dataclass
class Outcome:
    members: dict[str, list[int]]  # cluster id → the local rows it gains
    born: set[str]
    grown: set[str]
    absorbed: dict[str, list[str]]  # surviving cluster → the clusters merged into it


def _outcome(
    graph: LocalGraph, cluster_docs: Mapping[str, ClusterDoc], min_cluster_size: int, rows: Sequence[int]
) -> Outcome:
    """What the groups become: a group with clusters continues the largest (the others merge into it); one
    without becomes a new cluster at `min_cluster_size` faces, else its faces stay unclustered. Members are
    given as local rows (`rows[node]`)."""
    outcome = Outcome({}, set(), set(), {})
    for group in graph.groups():
        if group.clusters:
            ranked = sorted(group.clusters, key=lambda c: (-int(cluster_docs[c].get("size", 0)), c))
            target, merged = ranked[0], ranked[1:]
            outcome.grown.add(target)
            if merged:
                outcome.absorbed[target] = merged
        elif len(group.rows) >= min_cluster_size:
            target = f"clu_{uuid.uuid4().hex[:12]}"
            outcome.born.add(target)
        else:
            continue
        outcome.members[target] = sorted(rows[node] for node in group.rows)
    return outcome


def _cluster_docs(
    meta: MetaStore,
    library: str,
    run_id: str,
    now: dt.datetime,
    local: Neighbourhood,
    cluster_docs: Mapping[str, ClusterDoc],
    outcome: Outcome,
    photos: Sequence[FaceDoc],
    states: Mapping[str, Doc],
) -> dict[str, Doc]:
    """The documents of the clusters that grew, merged or were born: size, vector sum, best-quality owner and
    photo counts, updated by what changed in the photos of the local faces."""
    continued = [*outcome.grown, *itertools.chain(*outcome.absorbed.values())]
    owners = meta.faces_by_id([str(cluster_docs[c]["owner_face_id"]) for c in continued])
    quality = {f["_id"]: face_quality(f) for f in [*local.faces, *owners]}
    into = {old: target for target, olds in outcome.absorbed.items() for old in olds}
    docs: dict[str, Doc] = {}
    for target, rows in outcome.members.items():
        sources = [cluster_docs[c] for c in [target, *outcome.absorbed.get(target, [])] if c in cluster_docs]
        total = sum((cluster_sum(d) for d in sources), start=unit(local.vectors[rows]).sum(axis=0))
        candidates = [str(d["owner_face_id"]) for d in sources] + [local.faces[r]["_id"] for r in rows]
        docs[target] = {
            **(sources[0] if sources else {}),
            "_id": target, "library": library, "run_id": run_id, "updated_at": now,
            "size": sum(int(d.get("size", 0)) for d in sources) + len(rows),
            "owner_face_id": max(candidates, key=lambda f: (quality.get(f, 0.0), f)),
            "images": sum(int(d.get("images", 0)) for d in sources),
            "single_person_images": sum(int(d.get("single_person_images", 0)) for d in sources),
            "multi_person_images": sum(int(d.get("multi_person_images", 0)) for d in sources),
            **centroid_fields(total),
        }  # fmt: skip
    for photo_faces in _by_photo(photos).values():
        before = {into.get(w, w) for f in photo_faces if (w := f.get("cluster_id") or f.get("person_id"))}
        after = set()
        for f in photo_faces:
            state = states.get(f["_id"], f)
            if who := state.get("cluster_id") or state.get("person_id"):
                after.add(into.get(str(who), str(who)))
        for side, sign in ((before, -1), (after, 1)):
            for who in side & docs.keys():
                docs[who]["images"] += sign
                docs[who]["single_person_images" if len(side) == 1 else "multi_person_images"] += sign
    return docs


def _by_photo(faces: Iterable[FaceDoc]) -> dict[str, list[FaceDoc]]:
    grouped: dict[str, list[FaceDoc]] = defaultdict(list)
    for face in faces:
        grouped[str(face["image"])].append(face)
    return grouped


def estimate_drift(
    meta: MetaStore,
    vectors: Vectors,
    library: str,
    local: Neighbourhood,
    states: Mapping[str, Doc],
    sizes: Mapping[str, int],
    options: RunOptions,
) -> float | None:
    """1 − BCubed agreement between the clusters as they now stand and a fresh clustering of the same faces:
    a random sample of the clusters this run changed (`sizes`: their sizes now), all their faces, up to about
    `DRIFT_SAMPLE` faces, and the local faces left unclustered. None when there is nothing to compare."""
    from facecluster.eval.metrics import score_clustering

    chosen, total = [], 0
    for cluster_id in np.random.default_rng(0).permutation(sorted(sizes)).tolist():
        if total >= DRIFT_SAMPLE:
            break
        chosen.append(str(cluster_id))
        total += sizes[cluster_id]
    members = meta.clustered_faces(library, chosen, fields=["cluster_id", "image"]) if chosen else []
    loose = [f for f in local.faces if not _has_label(states.get(f["_id"], f))][: DRIFT_SAMPLE // 2]
    faces = members + loose
    if len(faces) < 2:
        return None
    now_labels = [str(f.get("cluster_id") or f"-{f['_id']}") for f in faces]
    matrix = read_vectors(vectors, [f["_id"] for f in faces])
    fresh = cluster(matrix, [str(f["image"]) for f in faces], options.unknown)
    return round(1.0 - score_clustering(now_labels, fresh).bcubed_f, 4)
