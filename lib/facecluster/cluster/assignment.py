"""Cluster → known user assignment, by `centroid` or by `vote`.

centroid: the normalised mean of all the cluster's faces against every profile template; the
nearest profile is assigned at `threshold` or more. vote: every face votes for its nearest profile
(when at `threshold` or more); the winner is assigned when its share of the cluster's faces and
its margin over the runner-up's share reach the minimums. Every decision records the similarity,
the runner-up and the margin.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from facecluster.engine.registry import EmbedderSpec
from facecluster.errors import Conflict, NotFound
from facecluster.settings import Settings, first_set
from facecluster.store.documents import RunDoc
from facecluster.store.meta import MetaStore, now
from facecluster.store.vectors import Hit, Vectors

Strategy = Literal["centroid", "vote"]


@dataclass(frozen=True, slots=True)
class AssignOptions:
    strategy: Strategy
    threshold: float
    min_share: float = 0.5
    min_margin: float = 0.2


@dataclass(slots=True)
class Decision:
    """One cluster's outcome; `user_id` is None when nobody qualifies."""

    cluster_id: str
    user_id: str | None
    similarity: float | None
    runner_up: str | None = None
    runner_up_similarity: float | None = None
    margin: float | None = None
    share: float | None = None  # vote only: the winner's share of the cluster's faces
    faces: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_centroid(cluster_id: str, hits: Sequence[Hit], threshold: float, faces: int) -> Decision:
    """`hits`: the profiles nearest the cluster's centroid, best first."""
    if not hits:
        return Decision(cluster_id, None, None, faces=faces, reason="no profiles")
    best = hits[0]
    runner = hits[1] if len(hits) > 1 else None
    decision = Decision(
        cluster_id,
        str(best.payload["user_id"]),
        round(best.similarity, 4),
        runner_up=str(runner.payload["user_id"]) if runner else None,
        runner_up_similarity=round(runner.similarity, 4) if runner else None,
        margin=round(best.similarity - runner.similarity, 4) if runner else None,
        faces=faces,
    )
    if best.similarity < threshold:
        decision.user_id = None
        decision.reason = f"best similarity {best.similarity:.3f} is below threshold {threshold:g}"
    return decision


def decide_vote(cluster_id: str, face_hits: Sequence[Sequence[Hit]], options: AssignOptions) -> Decision:
    """`face_hits`: for each face of the cluster, the profiles nearest it, best first."""
    votes: Counter[str] = Counter()
    similarities: dict[str, list[float]] = defaultdict(list)
    for hits in face_hits:
        if hits and hits[0].similarity >= options.threshold:
            user = str(hits[0].payload["user_id"])
            votes[user] += 1
            similarities[user].append(hits[0].similarity)
    faces = len(face_hits)
    ranked = votes.most_common(2)
    if not ranked:
        reason = f"no face is within threshold {options.threshold:g} of a profile"
        return Decision(cluster_id, None, None, share=0.0, faces=faces, reason=reason)
    (winner, count), runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    share = count / faces
    margin = share - (runner[1] / faces if runner else 0.0)
    decision = Decision(
        cluster_id,
        winner,
        round(float(np.mean(similarities[winner])), 4),
        runner_up=runner[0] if runner else None,
        runner_up_similarity=round(float(np.mean(similarities[runner[0]])), 4) if runner else None,
        margin=round(margin, 4),
        share=round(share, 4),
        faces=faces,
    )
    if share < options.min_share:
        decision.user_id, decision.reason = None, f"winner's share {share:.2f} is below min_share {options.min_share:g}"
    elif margin < options.min_margin:
        decision.user_id, decision.reason = None, f"margin {margin:.2f} is below min_margin {options.min_margin:g}"
    return decision


class ClusteringNotFound(NotFound):
    """No such clustering run in the library."""


class ClusteringSuperseded(Conflict):
    """The run's clusters were replaced by a later run's."""


@dataclass
class AssignReport:
    library: str
    clustering_id: str
    strategy: str
    threshold: float
    dry_run: bool
    assigned: int = 0
    unassigned: int = 0
    kept: int = 0  # existing assignments left alone (overwrite false)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latest_run(meta: MetaStore, library: str) -> RunDoc | None:
    return meta.latest_run(library)


def assign_clusters(
    meta: MetaStore,
    faces: Vectors,
    profiles: Vectors,
    library: str,
    options: AssignOptions,
    *,
    clustering_id: str | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    model_version: str = "",
) -> AssignReport:
    """Assign every cluster of the library's latest clustering run to a known user, or to nobody."""
    latest = latest_run(meta, library)
    if latest is None or (clustering_id is not None and clustering_id != latest["_id"]):
        known = clustering_id is not None and meta.run(clustering_id, library)
        if known and latest is not None:
            raise ClusteringSuperseded(f"clustering {clustering_id} was superseded by {latest['_id']}")
        missing = f"clustering {clustering_id} not found" if clustering_id else "no clustering run"
        raise ClusteringNotFound(f"{missing} in library {library}")
    run_id = str(latest["_id"])
    clusters = meta.clusters(library)
    report = AssignReport(library, run_id, options.strategy, options.threshold, dry_run)
    if not clusters:
        return report
    if options.strategy == "centroid":
        centroids = np.asarray([c["centroid"] for c in clusters], dtype=np.float32)
        hits = profiles.search(centroids, 2)
        decisions = [
            decide_centroid(c["_id"], h, options.threshold, c["size"]) for c, h in zip(clusters, hits, strict=True)
        ]
    else:
        members = meta.clustered_faces(library)
        by_cluster: dict[str, list[str]] = defaultdict(list)
        for face in members:
            by_cluster[str(face["cluster_id"])].append(face["_id"])
        ids = [face_id for c in clusters for face_id in by_cluster[c["_id"]]]
        hits = profiles.search(faces.fetch(ids), 2) if ids else []
        decisions, offset = [], 0
        for c in clusters:
            count = len(by_cluster[c["_id"]])
            decisions.append(decide_vote(c["_id"], hits[offset : offset + count], options))
            offset += count
    existing = {doc["cluster_id"] for doc in meta.assignments(clustering_id=run_id)}
    docs = []
    for decision in decisions:
        if decision.cluster_id in existing and not overwrite:
            report.kept += 1
            continue
        if decision.user_id is None:
            report.unassigned += 1
            continue
        report.assigned += 1
        docs.append(
            {
                "_id": f"{run_id}:{decision.cluster_id}",
                "library": library,
                "clustering_id": run_id,
                **decision.to_dict(),
                "strategy": options.strategy,
                "threshold": options.threshold,
                "model_version": model_version,
                "assigned_at": now(),
            }
        )
    report.decisions = [d.to_dict() for d in decisions]
    if not dry_run:
        if overwrite:
            meta.delete_assignments(clustering_id=run_id)
        meta.write_assignments(docs)
    return report


def assign_options(
    settings: Settings, spec: EmbedderSpec, *, strategy: Strategy | None = None, threshold: float | None = None
) -> AssignOptions:
    """The call's values, else the settings, else the embedder's calibrated person threshold."""
    return AssignOptions(
        strategy=strategy or settings.assignment.assign_strategy,
        threshold=first_set(threshold, settings.assignment.assign_threshold, spec.person_match_threshold),
        min_share=settings.assignment.vote_min_share,
        min_margin=settings.assignment.vote_min_margin,
    )
