"""Exact k-nearest-neighbour graphs of unit vectors in blocks: memory O(N·k), never N×N."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class KnnGraph:
    """For each row, its k nearest other rows by cosine, best first."""

    indices: NDArray[np.int64]  # (N, k)
    similarities: NDArray[np.float32]  # (N, k)

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def edges(self, min_similarity: float) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
        """Undirected edges (i < j) at or above `min_similarity`, each once."""
        rows = np.repeat(np.arange(self.size), self.indices.shape[1])
        cols = self.indices.ravel()
        sims = self.similarities.ravel()
        keep = (sims >= min_similarity) & (cols >= 0) & (rows != cols)
        first, second = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
        pairs, where = np.unique(first * self.size + second, return_index=True)
        return pairs // self.size, pairs % self.size, sims[keep][where]

    def distance_matrix(self, max_distance: float = np.inf) -> sp.csr_matrix:
        """Symmetric sparse matrix of Euclidean distances (sqrt(2 - 2 cos) on unit vectors)."""
        first, second, sims = self.edges(-1.0)
        distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
        keep = distances <= max_distance
        first, second, distances = first[keep], second[keep], np.maximum(distances[keep], 1e-9)
        matrix = sp.coo_matrix(
            (
                np.concatenate([distances, distances]),
                (np.concatenate([first, second]), np.concatenate([second, first])),
            ),
            shape=(self.size, self.size),
        )
        return matrix.tocsr()


def knn_rows(
    vectors: NDArray[np.float32], rows: slice, k: int, *, block: int = 1024
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k nearest neighbours of `vectors[rows]` among all `vectors` (one shard of the graph)."""
    start, stop, _ = rows.indices(len(vectors))
    k = min(k, len(vectors) - 1)
    indices = np.full((stop - start, max(k, 0)), -1, dtype=np.int64)
    similarities = np.full((stop - start, max(k, 0)), -np.inf, dtype=np.float32)
    if k <= 0:
        return indices, similarities
    for first in range(start, stop, block):
        last = min(first + block, stop)
        scores = vectors[first:last] @ vectors.T  # (block, N): the only large array, block-sized
        scores[np.arange(last - first), np.arange(first, last)] = -np.inf  # not its own neighbour
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        indices[first - start : last - start] = np.take_along_axis(top, order, axis=1)
        similarities[first - start : last - start] = np.take_along_axis(top_scores, order, axis=1)
    return indices, similarities


def knn_graph(vectors: NDArray[np.float32], k: int, *, block: int = 1024) -> KnnGraph:
    indices, similarities = knn_rows(vectors, slice(0, len(vectors)), k, block=block)
    return KnnGraph(indices, similarities)
