"""Vector versions: the embedder's own vectors, or those vectors through a trained projection head.

The head is a residual MLP, `y = unit(x + W2·relu(W1·x + b1) + b2)`, evaluated here in numpy so
that ingest, Serve replicas and jobs apply it without torch. It starts as the identity and stays
near it, so a trained version keeps the embedder's calibrated thresholds (mapping them through the
validation pairs was measured, and lost held-out accuracy: BENCHMARKS.md).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

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


def unit(vectors: NDArray[np.floating]) -> NDArray[np.float64]:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float64)


@dataclass(frozen=True)
class VectorSpace:
    """One vector version: `id` names its collections; `base` is the embedder version it derives from."""

    id: str
    base: str
    dim: int
    weights: Weights | None = field(default=None, repr=False)

    @property
    def trained(self) -> bool:
        return self.weights is not None

    def project(self, vectors: NDArray[np.floating]) -> NDArray[np.float32]:
        """Embedder output in this space (normalised)."""
        if self.weights is None:
            return unit(np.asarray(vectors, dtype=np.float32)).astype(np.float32)
        return apply_head(self.weights, vectors)


def space_from_doc(doc: dict[str, Any]) -> VectorSpace:
    """A version as the `versions` collection stores it."""
    weights = weights_from_bytes(base64.b64decode(doc["weights"])) if doc.get("weights") else None
    return VectorSpace(doc["_id"], doc["base"], int(doc["dim"]), weights)
