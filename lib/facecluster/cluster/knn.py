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


def unique_edges(
    first: NDArray[np.int64], second: NDArray[np.int64], sims: NDArray[np.float32], size: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Edges among `size` nodes as undirected pairs (i < j), each once, sorted by pair."""
    low, high = np.minimum(first, second), np.maximum(first, second)
    pairs, where = np.unique(low * max(size, 1) + high, return_index=True)
    return pairs // max(size, 1), pairs % max(size, 1), sims[where]


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
        return unique_edges(rows[keep], cols[keep], sims[keep], self.size)

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


def _exact(
    base: NDArray[np.float32], queries: NDArray[np.float32], k: int, own: int | None, block_bytes: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k best rows of `base` for each query, exactly, in blocks of queries whose score matrix fits
    `block_bytes`; with `own`, query i is row `own + i` of `base` and never its own neighbour. torch's top-k
    picks the neighbours (with numpy's argpartition instead, 100k faces took 158 s rather than 34 s)."""
    import torch

    indices = np.full((len(queries), max(k, 0)), -1, dtype=np.int64)
    similarities = np.full((len(queries), max(k, 0)), -np.inf, dtype=np.float32)
    if k <= 0 or len(queries) == 0:
        return indices, similarities
    everything = torch.from_numpy(np.require(base, np.float32, ["C", "W"]))
    asked = torch.from_numpy(np.require(queries, np.float32, ["C", "W"]))  # a copy where Ray gave it read-only
    block = max(1, block_bytes // (4 * len(base)))
    with torch.inference_mode():
        for first in range(0, len(queries), block):
            last = min(first + block, len(queries))
            scores = asked[first:last] @ everything.T  # (block, N): the only large array
            if own is not None:
                scores[torch.arange(last - first), torch.arange(own + first, own + last)] = float("-inf")
            top = torch.topk(scores, k, dim=1)  # sorted, best first
            indices[first:last] = top.indices.numpy()
            similarities[first:last] = top.values.numpy()
    return indices, similarities


def knn_rows(
    vectors: NDArray[np.float32], rows: slice, k: int, *, block_bytes: int = 512 * 2**20
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The k nearest neighbours of `vectors[rows]` among all `vectors`, exactly."""
    start, stop, _ = rows.indices(len(vectors))
    return _exact(vectors, vectors[start:stop], min(k, len(vectors) - 1), start, block_bytes)


def knn_graph(vectors: NDArray[np.float32], k: int, *, exact_max: int = EXACT_MAX) -> KnnGraph:
    """Exact up to `exact_max` vectors, HNSW above."""
    if len(vectors) > exact_max:
        return hnsw_graph(vectors, k)
    indices, similarities = knn_rows(vectors, slice(0, len(vectors)), k)
    return KnnGraph(indices, similarities)


class NeighbourIndex:
    """Unit vectors to search for any query's nearest: exactly up to `exact_max` of them, through an HNSW
    index on inner product (faiss; cosine on unit vectors) above, built and searched in O(N log N)."""

    def __init__(
        self, vectors: NDArray[np.float32], k: int, *, exact_max: int = EXACT_MAX, links: int = 16,
        ef_construction: int = 100, block_bytes: int = 512 * 2**20,
    ) -> None:  # fmt: skip
        import faiss

        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.block_bytes = block_bytes
        self.hnsw: faiss.IndexHNSWFlat | None = None
        if len(self.vectors) > exact_max:
            self.hnsw = faiss.IndexHNSWFlat(self.vectors.shape[1], links, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = ef_construction
            self.hnsw.add(self.vectors)
            self.hnsw.hnsw.efSearch = max(64, 2 * k)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The `k` nearest rows for each query, best first; -1 and -inf where there are fewer."""
        k = min(k, len(self.vectors))
        if self.hnsw is None:
            return _exact(self.vectors, queries, k, None, self.block_bytes)
        similarities, indices = self.hnsw.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return indices.astype(np.int64), np.where(indices >= 0, similarities, -np.inf).astype(np.float32)


def hnsw_graph(vectors: NDArray[np.float32], k: int, *, links: int = 16, ef_construction: int = 100) -> KnnGraph:
    """Approximate neighbours from an HNSW index (`NeighbourIndex`). Each row's own point is dropped wherever
    the index returns it."""
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(k, len(points) - 1)
    if k <= 0:
        return KnnGraph(np.zeros((len(points), 0), np.int64), np.zeros((len(points), 0), np.float32))
    index = NeighbourIndex(points, k, exact_max=0, links=links, ef_construction=ef_construction)
    indices, similarities = index.search(points, k + 1)
    own = indices == np.arange(len(points))[:, None]
    keep = ~own
    keep[~own.any(axis=1), -1] = False  # rows without themselves lose their farthest instead
    return KnnGraph(
        indices[keep].reshape(len(points), k).astype(np.int64),
        similarities[keep].reshape(len(points), k).astype(np.float32),
    )
