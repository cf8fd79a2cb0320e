"""A full clustering run across a Ray cluster (`cluster --shards N`): the neighbours it finds across shards,
and the run itself on three nodes submitted with `ray job submit`, against the single-process run."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from facecluster.cluster.knn import knn_graph
from facecluster.cluster.sharded import Shard
from tests.conftest import BIN, three_nodes


def _shards(vectors: np.ndarray, count: int, k: int) -> list[Shard]:
    bounds = np.linspace(0, len(vectors), count + 1, dtype=int)
    shards = []
    for a, b in itertools.pairwise(bounds):
        shard = Shard(vectors[a:b], [f"{i}.jpg" for i in range(a, b)])
        shard.keep(np.arange(b - a), int(a), k)
        shards.append(shard)
    return shards


@pytest.mark.fast
def test_neighbours_across_shards_are_the_exact_ones() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shards = _shards(vectors, 3, 5)
    for shard in shards:
        shard.neighbours(0, *[other.search(shard.vectors, 6) for other in shards])
    single = knn_graph(vectors, 5)
    assert np.array_equal(np.concatenate([s.indices for s in shards]), single.indices)
    assert np.allclose(np.concatenate([s.similarities for s in shards]), single.similarities, atol=1e-5)


def test_a_sharded_run_on_three_nodes_agrees_with_one_process(lfw_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    # A few LFW people's photos seed a library of 3,000 faces whose identities are known.
    images = tmp_path / "images"
    folders = sorted((lfw_dir / "images").iterdir())
    for folder in [f for f in folders if len(list(f.glob("*.jpg"))) >= 10][:12]:
        (images / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:10]:
            shutil.copy(photo, images / folder.name / photo.name)
    env = {"FACECLUSTER_DATA_DIR": str(tmp_path / "data"), "FACECLUSTER_MODELS_DIR": str(models_dir)}
    with three_nodes() as head:
        submitted = subprocess.run(
            [
                str(BIN / "ray"), "job", "submit", "--address", head.dashboard,
                "--runtime-env-json", json.dumps({"env_vars": env}), "--",
                "facecluster", "bench", "sharded", "--faces", "3000", "--images", str(images), "--shards", "3",
            ],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    result = json.loads(next(line for line in reversed(submitted.stdout.splitlines()) if line.startswith("{")))
    assert result["nodes"] == 3 and result["shard_nodes"] == 3  # the shards ran on every node
    assert result["agreement_bcubed_f"] >= 0.99
    assert result["bcubed_f_sharded"] >= result["bcubed_f_single"] - 0.01
