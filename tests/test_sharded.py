"""A full clustering run across a Ray cluster (`cluster --shards N`): the neighbours it finds across shards,
and the run itself on three nodes submitted with `ray job submit`, against the single-process run."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facecluster.cluster.knn import knn_graph
from facecluster.cluster.sharded import Shard
from facecluster.store.owner import owner_name
from tests.conftest import BIN, Nodes, three_nodes


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


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    """One three-node cluster for the module's tests (the one that loses a node goes last)."""
    with three_nodes() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def people(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few LFW people's photos: 12 people, 10 photos each."""
    images = tmp_path_factory.mktemp("people")
    folders = sorted((lfw_dir / "images").iterdir())
    for folder in [f for f in folders if len(list(f.glob("*.jpg"))) >= 10][:12]:
        (images / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:10]:
            shutil.copy(photo, images / folder.name / photo.name)
    return images


def _submit(nodes: Nodes, env: dict[str, str], entrypoint: str) -> str:
    """Run `entrypoint` (a shell command line) as a job with `ray job submit`; what it printed."""
    submitted = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", nodes.head.dashboard,
         "--runtime-env-json", json.dumps({"env_vars": env}), "--", "sh", "-c", entrypoint],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    return submitted.stdout


def _labels(printed: str) -> dict[str, tuple[str | None, str | None]]:
    """Each face's cluster and person, from `export faces` lines."""
    records = [json.loads(line) for line in printed.splitlines() if line.startswith('{"face_id"')]
    return {r["face_id"]: (r["cluster_id"], r["person_id"]) for r in records}


@pytest.fixture
def env(tmp_path: Path, models_dir: Path) -> Iterator[dict[str, str]]:
    """A job's environment: a data directory the test's jobs share, whose MongoDB-wire server (started by a
    job) stops after the test."""
    from facecluster.store.embedded import stop_mongo

    yield {"FACECLUSTER_DATA_DIR": str(tmp_path / "data"), "FACECLUSTER_MODELS_DIR": str(models_dir)}
    stop_mongo(tmp_path / "data")


def test_a_sharded_run_on_three_nodes_agrees_with_one_process(nodes: Nodes, people: Path, env: dict[str, str]) -> None:
    # A few LFW people's photos seed a library of 3,000 faces whose identities are known.
    printed = _submit(nodes, env, f"facecluster bench sharded --faces 3000 --images {people} --shards 3")
    result = json.loads(next(line for line in reversed(printed.splitlines()) if line.startswith("{")))
    assert result["nodes"] == 3 and result["shard_nodes"] == 3  # the shards ran on every node
    assert result["agreement_bcubed_f"] >= 0.99
    assert result["bcubed_f_sharded"] >= result["bcubed_f_single"] - 0.01


def test_a_node_lost_during_a_sharded_run_fails_it_and_the_library_keeps_its_clustering(
    nodes: Nodes, people: Path, env: dict[str, str]
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_nodes

    before = _labels(
        _submit(
            nodes,
            env,
            f"facecluster ingest {people} --library lost && facecluster cluster --library lost --method graph "
            "&& facecluster export faces --library lost",
        )
    )
    assert len(before) >= 100 and any(cluster for cluster, _ in before.values())
    # The node to lose: a worker that does not hold this data directory's vector store (its owner actor).
    address = nodes.head.dashboard
    name = owner_name(str(Path(env["FACECLUSTER_DATA_DIR"]) / "vectors"))
    held = {str(a.node_id) for a in list_actors(address=address, filters=[("name", "=", name)], detail=True)}
    assert held
    victim = next(
        resource
        for node in list_nodes(address=address, detail=True)
        for resource in node.resources_total
        if resource in nodes.workers and str(node.node_id) not in held
    )
    client = JobSubmissionClient(address)
    job = client.submit_job(
        entrypoint="facecluster cluster --library lost --method graph --shards 3", runtime_env={"env_vars": env}
    )
    deadline = time.monotonic() + 300
    while "reading vectors into 3 shards" not in client.get_job_logs(job):
        assert client.get_job_status(job) in (JobStatus.PENDING, JobStatus.RUNNING), client.get_job_logs(job)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    nodes.kill(victim)
    while (status := client.get_job_status(job)) in (JobStatus.PENDING, JobStatus.RUNNING):
        assert time.monotonic() < deadline, client.get_job_logs(job)
        time.sleep(1)
    said = client.get_job_logs(job)
    assert status == JobStatus.FAILED, said
    assert "a shard of the clustering run was lost" in said and "keeps its previous clustering" in said
    after = _labels(_submit(nodes, env, "facecluster export faces --library lost"))
    assert after == before  # labels are switched only when a run completes
