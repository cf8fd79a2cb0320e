"""Clustering accuracy against true identities: pairwise and BCubed precision, recall and F, NMI.

Unclustered faces (label -1) count as clusters of one, as a person sees them. Everything is
computed from the contingency table, so a million faces cost no pair enumeration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class ClusterScores:
    faces: int
    clusters: int  # predicted clusters of two or more faces
    identities: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _f(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _pairs(counts: NDArray[np.int64]) -> int:
    return int((counts * (counts - 1) // 2).sum())


def score_clustering(truth: Sequence[str], predicted: Sequence[int] | NDArray[np.int64]) -> ClusterScores:
    """Scores of `predicted` cluster labels (-1 = unclustered) against `truth` identities."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(predicted, dtype=np.int64).copy()
    singles = labels < 0
    labels[singles] = labels.max(initial=-1) + 1 + np.arange(int(singles.sum()))  # each its own cluster
    truth_ids = np.unique(np.asarray(truth), return_inverse=True)[1]
    cells = Counter(zip(labels.tolist(), truth_ids.tolist(), strict=True))
    cell_counts = np.array(list(cells.values()), dtype=np.int64)
    cluster_sizes = Counter(labels.tolist())
    class_sizes = Counter(truth_ids.tolist())

    together_true = _pairs(cell_counts)
    together_predicted = _pairs(np.array(list(cluster_sizes.values()), dtype=np.int64))
    together_truth = _pairs(np.array(list(class_sizes.values()), dtype=np.int64))
    precision = together_true / together_predicted if together_predicted else 1.0
    recall = together_true / together_truth if together_truth else 1.0

    n = len(labels)
    b_precision = sum(c * c / cluster_sizes[k] for (k, _), c in cells.items()) / n if n else 0.0
    b_recall = sum(c * c / class_sizes[t] for (_, t), c in cells.items()) / n if n else 0.0
    return ClusterScores(
        faces=n,
        clusters=sum(1 for size in cluster_sizes.values() if size >= 2),
        identities=len(class_sizes),
        pairwise_precision=precision,
        pairwise_recall=recall,
        pairwise_f=_f(precision, recall),
        bcubed_precision=b_precision,
        bcubed_recall=b_recall,
        bcubed_f=_f(b_precision, b_recall),
        nmi=float(normalized_mutual_info_score(truth_ids, labels)) if n else 0.0,
    )


def tar_at_far(vectors: NDArray[np.float32], labels: list[str], far: float = 1e-3) -> float:
    """True-accept rate at the threshold that accepts a share `far` of impostor pairs (all pairs)."""
    same, different = pair_similarities(vectors, labels)
    if not len(same) or not len(different):
        return float("nan")
    threshold = float(np.quantile(different, 1.0 - far))
    return float((same > threshold).mean())


def pair_similarities(
    vectors: NDArray[np.float32], labels: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cosine similarities of every genuine pair and every impostor pair of unit `vectors`."""
    similarity = np.asarray(vectors, np.float64) @ np.asarray(vectors, np.float64).T
    names = np.asarray(labels, dtype=object)
    upper = np.triu(np.ones(similarity.shape, dtype=bool), k=1)
    same = (names[:, None] == names[None, :]) & upper
    return similarity[same], similarity[upper & ~same]
