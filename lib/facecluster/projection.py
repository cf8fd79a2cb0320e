"""Vector versions: the embedder's own vectors, or those vectors through a trained projection head.

The head is a residual MLP, `y = unit(x + W2·relu(W1·x + b1) + b2)`, evaluated here in numpy so
that ingest, Serve replicas and jobs apply it without torch. A trained version carries its
thresholds: each of the embedder's calibrated cosine thresholds mapped to where it falls among the
validation persons' face pairs in the new space.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facecluster.clustering import unit
from facecluster.registry import EmbedderSpec

#: The weights of a head, by name: fc1 (hidden × d), fc1_bias, fc2 (d × hidden), fc2_bias.
Weights = dict[str, NDArray[np.float32]]
WEIGHT_NAMES = ("fc1", "fc1_bias", "fc2", "fc2_bias")


def apply_head(weights: Weights, vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """The head on a batch of vectors (normalised first, as the embedder's are compared)."""
    x = unit(np.asarray(vectors, dtype=np.float32)).astype(np.float32)
    hidden = np.maximum(x @ weights["fc1"].T + weights["fc1_bias"], 0.0)
    return unit(x + hidden @ weights["fc2"].T + weights["fc2_bias"]).astype(np.float32)


def weights_to_bytes(weights: Weights) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, fc1=weights["fc1"], fc1_bias=weights["fc1_bias"], fc2=weights["fc2"], fc2_bias=weights["fc2_bias"])
    return buffer.getvalue()


def weights_from_bytes(data: bytes) -> Weights:
    with np.load(io.BytesIO(data)) as archive:
        return {name: np.asarray(archive[name], dtype=np.float32) for name in WEIGHT_NAMES}


def map_thresholds(
    base: NDArray[np.floating], projected: NDArray[np.floating], thresholds: dict[str, float]
) -> dict[str, float]:
    """Each threshold moved to where it falls among the same pairs in the new space: `base` and
    `projected` are the same pairs' similarities (genuine and impostor) before and after the head.
    The map is monotone and piecewise linear through the sorted pairs, so a threshold keeps the
    share of pairs it accepts; beyond the pairs it moves by the offset at the nearer end."""
    before, after = np.sort(np.asarray(base, np.float64)), np.sort(np.asarray(projected, np.float64))
    out = {}
    for name, value in thresholds.items():
        if value < before[0]:
            moved = value + after[0] - before[0]
        elif value > before[-1]:
            moved = value + after[-1] - before[-1]
        else:
            moved = float(np.interp(value, before, after))
        out[name] = round(float(moved), 4)
    return out


@dataclass(frozen=True)
class VectorSpace:
    """One vector version: `id` names its collections; `base` is the embedder version it derives from."""

    id: str
    base: str
    dim: int
    weights: Weights | None = field(default=None, repr=False)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.weights is not None

    def project(self, vectors: NDArray[np.floating]) -> NDArray[np.float32]:
        """Embedder output in this space (normalised)."""
        if self.weights is None:
            return unit(np.asarray(vectors, dtype=np.float32)).astype(np.float32)
        return apply_head(self.weights, vectors)

    def spec(self, base: EmbedderSpec) -> EmbedderSpec:
        """The embedder's spec with this version's thresholds."""
        if not self.thresholds:
            return base
        t = self.thresholds
        methods = {name: t.get(f"cluster_{name}", value) for name, value in base.cluster_thresholds.items()}
        return base.model_copy(
            update={
                "verify_threshold": t.get("verify", base.verify_threshold),
                "person_match_threshold": t.get("person_match", base.person_match_threshold),
                "cluster_merge_threshold": t.get("cluster_merge", base.cluster_merge_threshold),
                "cluster_thresholds": methods,
            }
        )


def spec_thresholds(spec: EmbedderSpec) -> dict[str, float]:
    """The embedder's calibrated thresholds under the names `VectorSpace.thresholds` uses."""
    out = {
        "verify": spec.verify_threshold,
        "person_match": spec.person_match_threshold,
        "cluster_merge": spec.cluster_merge_threshold,
    }
    out.update({f"cluster_{name}": value for name, value in spec.cluster_thresholds.items()})
    return out


def space_from_doc(doc: dict[str, Any]) -> VectorSpace:
    """A version as the `versions` collection stores it."""
    weights = weights_from_bytes(base64.b64decode(doc["weights"])) if doc.get("weights") else None
    return VectorSpace(doc["_id"], doc["base"], int(doc["dim"]), weights, dict(doc.get("thresholds") or {}))
