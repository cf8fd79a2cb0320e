"""The embedded vector store as jobs and the API reach it: the owner actor of the data directory's Qdrant
Edge shards on real Ray, killed with SIGKILL, and a data directory of the local-mode era opened through it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import ray

from facecluster.store.owner import OwnedVectors
from facecluster.store.vectors import QdrantConfig

from .test_vectors_contract import DIM, ids, local_mode_folder, unit


def owner_pid(owner: Any) -> int:
    return int(ray.get(owner.__ray_call__.remote(lambda _: os.getpid())))


def test_acknowledged_points_survive_a_killed_owner(ray_cluster: None, tmp_path: Path) -> None:
    root = tmp_path / "vectors"
    config = QdrantConfig(url=None, api_key=None, path=str(root), collection="faces_test_8d", dim=DIM)
    store = OwnedVectors(config)
    store.ensure_collection()
    acknowledged: list[str] = []
    for batch in range(4):
        points = ids(2000)
        store.upsert(points, unit(2000, seed=batch), [{"library": "a"}] * 2000)
        acknowledged += points
    late = ids(2000)
    pid = owner_pid(store.owner)
    in_flight = store.owner.call.remote(config, "upsert", late, unit(2000, seed=9), [{"library": "b"}] * 2000)
    os.kill(pid, signal.SIGKILL)  # during that upsert, or just before it
    ray.get(in_flight)  # the restarted owner replays its log and takes the call again
    assert store.ids() == set(acknowledged) | set(late)
    assert np.allclose(store.fetch(late[:3]), unit(2000, seed=9)[:3], atol=1e-6)


def test_a_local_mode_data_directory_opens_with_every_vector(ray_cluster: None, tmp_path: Path) -> None:
    written = local_mode_folder(tmp_path)  # the vectors as the code before Qdrant Edge left them
    for collection, (points, rows) in written.items():
        config = QdrantConfig(url=None, api_key=None, path=str(tmp_path / "vectors"), collection=collection, dim=DIM)
        store = OwnedVectors(config)
        assert store.ids() == set(points) and np.allclose(store.fetch(points), rows, atol=1e-6)
        assert [hit.id for hit in store.search(rows[:1], limit=1, library="a", payload=False)[0]] == points[:1]
    assert not (tmp_path / "qdrant").exists()
