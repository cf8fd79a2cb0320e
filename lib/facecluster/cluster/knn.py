"""k-nearest-neighbour graphs of unit vectors: memory O(N·k), never N×N.

Up to `EXACT_MAX` vectors the search is exact, in blocks of matrix products; above it, an HNSW
index (faiss) finds the neighbours in O(N log N) with a recall of 0.97–0.98 (BENCHMARKS.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

#: The largest set searched exactly: exact results while they cost seconds (HNSW is 3x faster at 100k).
EXACT_MAX = 20_000


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


def knn_graph(vectors: NDArray[np.float32], k: int, *, exact_max: int = EXACT_MAX) -> KnnGraph:
    """Exact up to `exact_max` vectors, HNSW above."""
    if len(vectors) > exact_max:
        return hnsw_graph(vectors, k)
    indices, similarities = knn_rows(vectors, slice(0, len(vectors)), k)
    return KnnGraph(indices, similarities)


def hnsw_graph(vectors: NDArray[np.float32], k: int, *, links: int = 16, ef_construction: int = 100) -> KnnGraph:
    """Approximate neighbours from an HNSW index on inner product (cosine on unit vectors): build
    and search O(N log N). Each row's own point is dropped wherever the index returns it."""
    import faiss

    points = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(k, len(points) - 1)
    if k <= 0:
        return KnnGraph(np.zeros((len(points), 0), np.int64), np.zeros((len(points), 0), np.float32))
    index = faiss.IndexHNSWFlat(points.shape[1], links, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(points)
    index.hnsw.efSearch = max(64, 2 * k)
    similarities, indices = index.search(points, k + 1)
    own = indices == np.arange(len(points))[:, None]
    keep = ~own
    keep[~own.any(axis=1), -1] = False  # rows without themselves lose their farthest instead
    return KnnGraph(
        indices[keep].reshape(len(points), k).astype(np.int64),
        similarities[keep].reshape(len(points), k).astype(np.float32),
    )
