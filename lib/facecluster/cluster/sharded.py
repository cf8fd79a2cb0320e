"""A full clustering run across a Ray cluster (`facecluster cluster --shards N`): no process holds more than
its shard's vectors and their index.

The driver reads the library's face documents and chooses the faces as one process does (ids, photos and
labels: no vector but the human-labelled ones). Each of N `StoredShard` actors, spread over the cluster's
nodes, reads its share of the vectors from the store, matches known persons (dual mode) and indexes its
unknown faces. The k-NN graph is built by sending each shard's faces, a block at a time, to every shard and
keeping each face's k best answers. Edges at the threshold become connected components: each shard joins its
own edges, the driver joins the shards' answers (one integer per face). The components are clustered by the
graph method's first phase (edges strongest first, centroid linkage, one face per photo) in `parts` Ray
tasks, each holding its components' faces only; the groups they return merge by centroid as in one process
(their vector sums only). The result equals the single-process run's up to the approximate neighbour search.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import connected_components

from facecluster.cluster.knn import NeighbourIndex, unique_edges
from facecluster.cluster.methods import (
    UNCLUSTERED,
    Groups,
    Labels,
    label_members,
    match_known,
    one_face_per_photo,
    ranked,
)
from facecluster.cluster.run import Labelled, LabelTask, read_vectors
from facecluster.errors import InvalidInput, Unavailable
from facecluster.logs import Progress
from facecluster.settings import Settings

#: Queries a shard sends to every shard at once (each answer: `BLOCK` × (k+1) ids and similarities).
BLOCK = 20_000


class Shard:
    """One shard of a run: the vectors of its faces, then the index of its unknown ones and their neighbours.
    Rows are numbered across shards from `offset` once the unknown faces are known."""

    def __init__(self, vectors: NDArray[np.float32], images: list[str]) -> None:
        self.vectors = vectors
        self.images = images
        self.offset = 0
        self.index: NeighbourIndex | None = None
        self.indices = np.zeros((0, 0), np.int64)
        self.similarities = np.zeros((0, 0), np.float32)

    def match(
        self, centroids: NDArray[np.float32], threshold: float, rejected: Sequence[AbstractSet[int]]
    ) -> tuple[Labels, NDArray[np.float32]]:
        """Dual mode's first phase on this shard's faces (the one-face-per-photo rule is the driver's)."""
        return match_known(self.vectors, self.images, centroids, threshold, rejected)

    def keep(self, rows: NDArray[np.int64], offset: int, k: int) -> int:
        """From now on only `rows` (the unknown faces) take part, numbered from `offset`; they are indexed."""
        self.vectors = np.ascontiguousarray(self.vectors[rows])
        self.images = [self.images[i] for i in rows.tolist()]
        self.offset = offset
        self.index = NeighbourIndex(self.vectors, k)
        self.indices = np.full((len(rows), k), -1, np.int64)
        self.similarities = np.full((len(rows), k), -np.inf, np.float32)
        return len(rows)

    def queries(self, start: int, stop: int) -> NDArray[np.float32]:
        return self.vectors[start:stop]

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The `k` nearest of this shard's faces to each query, as rows across shards."""
        assert self.index is not None
        indices, similarities = self.index.search(queries, k)
        return np.where(indices >= 0, indices + self.offset, -1), similarities

    def neighbours(self, start: int, *answers: tuple[NDArray[np.int64], NDArray[np.float32]]) -> None:
        """Keep the best of every shard's answers for rows `start`…, themselves left out."""
        indices = np.concatenate([a[0] for a in answers], axis=1)
        similarities = np.concatenate([a[1] for a in answers], axis=1)
        own = self.offset + start + np.arange(len(indices))
        similarities = np.where(indices == own[:, None], -np.inf, similarities)
        best = np.argsort(-similarities, axis=1, kind="stable")[:, : self.indices.shape[1]]
        chosen = np.take_along_axis(similarities, best, axis=1)
        stop, width = start + len(indices), best.shape[1]  # fewer than k where the shards hold fewer faces
        self.indices[start:stop, :width] = np.where(np.isfinite(chosen), np.take_along_axis(indices, best, axis=1), -1)
        self.similarities[start:stop, :width] = chosen

    def edges(self, threshold: float) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
        """This shard's rows' edges at `threshold` or more, (row, neighbour, similarity) across shards."""
        rows = np.repeat(self.offset + np.arange(len(self.indices)), self.indices.shape[1])
        cols, sims = self.indices.ravel(), self.similarities.ravel()
        keep = (sims >= threshold) & (cols >= 0)
        return rows[keep], cols[keep], sims[keep]

    def components(self, threshold: float) -> NDArray[np.int64]:
        """For each face this shard's edges touch, the smallest face its edges join it to: (2, M)."""
        first, second, _ = self.edges(threshold)
        nodes = np.unique(np.concatenate([first, second]))
        if not len(nodes):
            return np.zeros((2, 0), np.int64)
        a, b = np.searchsorted(nodes, first), np.searchsorted(nodes, second)
        graph = sp.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(nodes), len(nodes)))
        _, label = connected_components(graph, directed=False)
        smallest = np.full(label.max() + 1, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(smallest, label, nodes)
        return np.stack([nodes, smallest[label]])

    def parts(self, component: NDArray[np.int64], count: int, threshold: float) -> list[Part]:
        """This shard's faces and edges split by component into `count` parts (component modulo `count`)."""
        rows = self.offset + np.arange(len(self.vectors))
        first, second, sims = self.edges(threshold)
        of_row, of_edge = component[rows] % count, component[first] % count
        out = []
        for part in range(count):
            mine = np.flatnonzero(of_row == part)
            edges = np.flatnonzero(of_edge == part)
            out.append(
                Part(
                    rows[mine],
                    self.vectors[mine],
                    [self.images[i] for i in mine.tolist()],
                    first[edges],
                    second[edges],
                    sims[edges],
                )
            )
        return out


class StoredShard(Shard):
    """A shard whose actor reads its faces' vectors from the store itself (parallel reads, none in the driver)."""

    def __init__(self, settings: Settings, ids: list[str], images: list[str]) -> None:
        from facecluster.store.connection import connect

        super().__init__(read_vectors(connect(settings).vectors, ids), images)


@dataclass
class Part:
    """Faces (rows across shards, vectors, photos) and the edges among them, of some whole components."""

    rows: NDArray[np.int64]
    vectors: NDArray[np.float32]
    images: list[str]
    first: NDArray[np.int64]
    second: NDArray[np.int64]
    sims: NDArray[np.float32]


@dataclass
class PartGroups:
    """The groups the first phase made of a part: each one's rows, sum of unit vectors and photos."""

    members: list[NDArray[np.int64]]
    sums: NDArray[np.float32]
    images: list[set[str]]


def first_phase(threshold: float, *parts: Part) -> PartGroups:
    """The graph method's first phase on whole components: their edges joined strongest first."""
    rows = np.concatenate([p.rows for p in parts])
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    vectors = np.concatenate([p.vectors for p in parts])[order]
    every_image = [image for p in parts for image in p.images]
    images = [every_image[i] for i in order.tolist()]
    first = np.searchsorted(rows, np.concatenate([p.first for p in parts]))
    second = np.searchsorted(rows, np.concatenate([p.second for p in parts]))
    sims = np.concatenate([p.sims for p in parts])
    groups = Groups.of_faces(vectors, images)
    # Each edge once, as one process sees it (i < j, sorted by pair), whichever shard found it.
    groups.join_edges(*unique_edges(first, second, sims, len(rows)), threshold)
    roots = groups.roots()
    label = np.searchsorted(roots, [groups.find(i) for i in range(len(rows))])
    members = [rows[m] for m in label_members(label)]
    return PartGroups(members, groups.sums[roots], [groups.images[r] for r in roots.tolist()])


#: What a lost node or worker raises in the driver.
LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.OwnerDiedError,
)


def label_sharded(settings: Settings, shards: int, task: LabelTask, progress: Progress) -> Labelled:
    """The labelling step of a run on `shards` actors: known persons (dual mode) and the graph method's
    clusters of the rest. A shard lost with its node or worker
    fails the run before any label is written: the library keeps its clustering."""
    if task.params.method != "graph":
        raise InvalidInput(
            f"--shards runs the graph method only: {task.params.method} needs every face in one process "
            "(run it without --shards, or choose --method graph)"
        )
    shard_class = ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(StoredShard)
    bounds = np.linspace(0, len(task.ids), shards + 1, dtype=np.int64)
    spans = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    progress.step(f"reading vectors into {shards} shards")
    actors: list[Any] = [shard_class.remote(settings, list(task.ids[a:b]), list(task.images[a:b])) for a, b in spans]
    try:
        return _cluster_on(actors, spans, task, progress)
    except LOST as exc:
        raise Unavailable(
            f"a shard of the clustering run was lost ({type(exc).__name__}: a node or worker died); the library "
            "keeps its previous clustering: run it again"
        ) from exc
    finally:
        for actor in actors:
            ray.kill(actor)


def _cluster_on(actors: list[Any], spans: list[tuple[int, int]], task: LabelTask, progress: Progress) -> Labelled:
    params = task.params
    shards = len(actors)
    total_faces = spans[-1][1]
    assigned = np.full(total_faces, UNCLUSTERED, np.int64)
    similarity = np.zeros(total_faces, np.float32)
    if task.person_threshold is not None and len(task.centroids):
        progress.step("matching known persons")
        shared = ray.put(task.centroids)
        answers = ray.get(
            [
                actor.match.remote(shared, task.person_threshold, task.rejected[a:b])
                for actor, (a, b) in zip(actors, spans, strict=True)
            ]
        )
        for (a, b), (got, score) in zip(spans, answers, strict=True):
            assigned[a:b], similarity[a:b] = got, score
        assigned = one_face_per_photo(assigned, similarity, task.images)
    unknown = [np.flatnonzero(assigned[a:b] == UNCLUSTERED) for a, b in spans]
    offsets = np.concatenate([[0], np.cumsum([len(u) for u in unknown])]).astype(np.int64)
    if offsets[-1] == 0:
        return Labelled(assigned, similarity, [], [])
    progress.step(f"indexing {int(offsets[-1]):,} faces in {shards} shards")
    k = params.k
    ray.get([actor.keep.remote(rows, int(o), k) for actor, rows, o in zip(actors, unknown, offsets[:-1], strict=True)])
    progress.step("building the k-NN graph across shards")
    # In rounds: each shard's next block goes to every shard while the round before is merged.
    previous: list[Any] = []
    for start in range(0, max(len(rows) for rows in unknown), BLOCK):
        this_round = []
        for actor, rows in zip(actors, unknown, strict=True):
            if start < len(rows):
                block = actor.queries.remote(start, start + BLOCK)
                answers = [other.search.remote(block, k + 1) for other in actors]
                this_round.append(actor.neighbours.remote(start, *answers))
        ray.get(previous)
        progress.advance(sum(min(BLOCK, max(0, len(rows) - start)) for rows in unknown))
        previous = this_round
    ray.get(previous)
    progress.step("joining connected components")
    pairs = np.concatenate(ray.get([actor.components.remote(params.threshold) for actor in actors]), axis=1)
    total = int(offsets[-1])
    graph = sp.coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), shape=(total, total))
    _, component = connected_components(graph, directed=False)
    progress.step(f"clustering the components in {shards} parts")
    shared_component = ray.put(component.astype(np.int64))
    split = [
        actor.parts.options(num_returns=shards).remote(shared_component, shards, params.threshold) for actor in actors
    ]
    split = [s if isinstance(s, list) else [s] for s in split]
    every = [ref for refs in split for ref in refs]
    ray.wait(every, num_returns=len(every), fetch_local=False)
    for actor in actors:  # their parts stay in the object store; the CPUs go to the tasks below
        ray.kill(actor)
    phase = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(first_phase)
    found: list[PartGroups] = ray.get([phase.remote(params.threshold, *[s[p] for s in split]) for p in range(shards)])
    progress.step("merging close groups")
    members = [m for f in found for m in f.members]
    groups = Groups(np.concatenate([f.sums for f in found]), [i for f in found for i in f.images])
    groups.merge_close(params)
    of_group = groups.labels()
    labels = np.full(total, UNCLUSTERED, np.int64)
    for group, rows in enumerate(members):
        labels[rows] = of_group[group]
    labels = ranked(labels, params.min_cluster_size)
    # Rows across shards back to rows of `ids`, and each cluster's sum from its groups' sums.
    row_of = np.concatenate([a + u for (a, _), u in zip(spans, unknown, strict=True)]).astype(np.int64)
    count = int(labels.max(initial=UNCLUSTERED)) + 1
    totals = np.zeros((count, groups.sums.shape[1]), np.float32)
    for group, rows in enumerate(members):
        if (label := int(labels[rows[0]])) != UNCLUSTERED:
            totals[label] = groups.sums[groups.find(group)]  # a merged group's root holds its whole sum
    clusters: list[list[int]] = [[] for _ in range(count)]
    for row, label in zip(row_of.tolist(), labels.tolist(), strict=True):
        if label != UNCLUSTERED:
            clusters[label].append(row)
    return Labelled(assigned, similarity, clusters, list(totals))
