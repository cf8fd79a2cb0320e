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
    vectors: NDArray[np.float32], rows: slice, k: int, *, block_bytes: int = 512 * 2**20
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k nearest neighbours of `vectors[rows]` among all `vectors` (one shard of the graph).

    Rows go in blocks whose score matrix fits `block_bytes`; torch's top-k picks the neighbours
    (with numpy's argpartition instead, 100k faces took 158 s rather than 34 s; BENCHMARKS.md)."""
    import torch

    start, stop, _ = rows.indices(len(vectors))
    k = min(k, len(vectors) - 1)
    indices = np.full((stop - start, max(k, 0)), -1, dtype=np.int64)
    similarities = np.full((stop - start, max(k, 0)), -np.inf, dtype=np.float32)
    if k <= 0:
        return indices, similarities
    everything = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    block = max(1, block_bytes // (4 * len(vectors)))
    with torch.inference_mode():
        for first in range(start, stop, block):
            last = min(first + block, stop)
            scores = everything[first:last] @ everything.T  # (block, N): the only large array
            scores[torch.arange(last - first), torch.arange(first, last)] = float("-inf")  # not itself
            top = torch.topk(scores, k, dim=1)  # sorted, best first
            indices[first - start : last - start] = top.indices.numpy()
            similarities[first - start : last - start] = top.values.numpy()
    return indices, similarities


def knn_graph(vectors: NDArray[np.float32], k: int, *, block_bytes: int = 512 * 2**20) -> KnnGraph:
    indices, similarities = knn_rows(vectors, slice(0, len(vectors)), k, block_bytes=block_bytes)
    return KnnGraph(indices, similarities)
