"""The embedded default as users run it: `facecluster serve` up, then the CLI on the same data directory,
two commands at once, and `facecluster stop` ending everything; `config check` naming what fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from facecluster.runtime import head_processes, running

from .conftest import facecluster_serve, get_json

BIN = Path(sys.executable).parent
LIBRARY = "my-bucket/my-sub"


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "facecluster"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(command: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = command.communicate(timeout=600)
    assert command.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def test_serve_and_the_cli_side_by_side_then_stop(models_dir: Path, photos_dir: Path, tmp_path: Path) -> None:
    root, data = tmp_path / "libraries", tmp_path / "data"
    shutil.copytree(photos_dir / "enrol", root / LIBRARY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env |= {"FACECLUSTER_MODELS_DIR": str(models_dir), "FACECLUSTER_DATA_DIR": str(data)}
    env |= {"FACECLUSTER_LIBRARY_ROOT": str(root), "FACECLUSTER_WRITE_BATCH_SIZE": "4"}
    try:
        with facecluster_serve(env, tmp_path / "serve.log") as base:
            side_by_side(env, base, root, photos_dir)
    finally:
        head = finished(cli(env, "status"))["embedded_ray"]
        family = head_processes(head["pid"]) if head["running"] else []
        stopped = finished(cli(env, "stop"))
    assert stopped["stopped"] == {"ray": True, "mongodb": True}
    outlived = [p.pid for p in family if running(p)]  # the vector store's owner among them, holding its shards
    assert len(family) > 5 and not outlived, f"Ray processes still running when `facecluster stop` returned: {outlived}"
    after = finished(cli(env, "status"))
    assert not after["embedded_ray"]["running"] and not after["embedded_mongodb"]["running"]
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes of {data} outlived `facecluster stop`: {left}"


def side_by_side(env: dict[str, str], base: str, root: Path, photos_dir: Path) -> None:
    """With the API up: the CLI sees its Ray, ingests, clusters and ingests at once, reads statistics."""
    head = finished(cli(env, "status"))["embedded_ray"]
    assert head["running"] and head["gcs"].startswith("127.0.0.1:")  # the API started it; the CLI sees it

    # The CLI next to the API: an ingest, then clustering and an ingest of other photos at once.
    ingested = finished(cli(env, "ingest", str(root / LIBRARY), "--library", LIBRARY))
    assert ingested["images"] == 12 and ingested["failed"] == 0
    clustering = cli(env, "cluster", "--library", LIBRARY, "--min-cluster-size", "2")
    other = cli(env, "ingest", str(photos_dir / "group"), "--library", "group", "--limit", "4")
    assert finished(clustering)["clusters"] == 5
    assert finished(other)["images"] == 4
    assert finished(cli(env, "stats", "--library", LIBRARY))["clusters"] == 5
    # What the CLI wrote, the API reads: same MongoDB, same Qdrant storage, same Ray.
    clusters = get_json(f"{base}/api/v1/faces/clusters?library={LIBRARY}")
    assert len(clusters["clusters"]) == 5
    # A job the API queues goes to the data directory's head (token authentication on), not to port 8265.
    request = urllib.request.Request(f"{base}/cluster-bucket-persons/{LIBRARY}", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        queued = json.loads(response.read())
    deadline = time.monotonic() + 300
    while (job := get_json(f"{base}/api/v1/jobs/{queued['job_id']}"))["status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, job
        time.sleep(2)
    assert job["status"] == "SUCCEEDED", job
    training = cli(env, "train", "--epochs", "1")
    _, err = training.communicate(timeout=600)
    assert training.returncode == 2 and "labelled persons" in err, err[-2000:]
    assert finished(cli(env, "status"))["embedded_ray"]["pid"] == head["pid"]  # still the one head


def test_config_check_names_each_unreachable_backend(models_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "FACECLUSTER_MODELS_DIR": str(models_dir), "FACECLUSTER_DATA_DIR": str(tmp_path / "data")}
    healthy = cli(env, "config", "check")
    assert finished(healthy)["ok"] is True
    env |= {
        "MONGO_URI": "mongodb://admin:p%40ss@127.0.0.1:9/facecluster?authSource=admin",
        "QDRANT_URL": "http://127.0.0.1:9",
        "QDRANT_API_KEY": "s3cret",
        "RAY_ADDRESS": "127.0.0.1:9",
    }
    failing = cli(env, "config", "check")
    out, _ = failing.communicate(timeout=120)
    report = json.loads(out)
    assert failing.returncode == 2 and report["ok"] is False
    checks = report["checks"]
    assert checks["mongodb"]["target"] == "MongoDB at 127.0.0.1:9" and not checks["mongodb"]["ok"]
    assert checks["qdrant"]["target"] == "Qdrant at http://127.0.0.1:9" and not checks["qdrant"]["ok"]
    assert checks["ray"]["target"] == "Ray at 127.0.0.1:9" and "Connection refused" in checks["ray"]["error"]
    assert checks["models"]["ok"]
    assert "p%40ss" not in out and "p@ss" not in out and "s3cret" not in out
    assert not (tmp_path / "data" / "mongo").exists()  # nothing embedded was started in its place


ATTACH = """
import json, os, ray
from facecluster.deployment import init_ray
from facecluster.settings import Settings

init_ray(Settings())
seen = ray.get(ray.remote(lambda: os.environ.get("FACECLUSTER_READ_BATCH_SIZE")).remote())
actors = sorted(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True))
print(json.dumps({"runtime_env": ray.get_runtime_context().runtime_env, "seen": seen, "actors": actors}))
"""


def attach(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", ATTACH], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_embedded_head_starts_with_the_services_and_settings_its_jobs_use(models_dir: Path, tmp_path: Path) -> None:
    """The command that starts the data directory's Ray starts with it Ray Data's actors and the Qdrant
    storage's owner, which every ingest uses, and gives its workers this command's settings: a later command
    with the same settings adds no runtime env (each actor of its jobs starts a second sooner), one with
    other settings sends them along."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "FACECLUSTER_"))}
    env |= {"FACECLUSTER_MODELS_DIR": str(models_dir), "FACECLUSTER_DATA_DIR": str(tmp_path / "data")}
    try:
        first = attach(env | {"FACECLUSTER_READ_BATCH_SIZE": "7"})
        services = {"datasets_stats_actor", "AutoscalingCoordinator", "ActorLocationTracker"}
        assert services <= set(first["actors"]), first["actors"]
        assert any(name.startswith("facecluster-qdrant-") for name in first["actors"]), first["actors"]
        assert first["seen"] == "7" and "env_vars" not in first["runtime_env"]
        same = attach(env | {"FACECLUSTER_READ_BATCH_SIZE": "7"})
        assert same["seen"] == "7" and "env_vars" not in same["runtime_env"]
        other = attach(env | {"FACECLUSTER_READ_BATCH_SIZE": "9"})
        assert other["seen"] == "9" and other["runtime_env"]["env_vars"]["FACECLUSTER_READ_BATCH_SIZE"] == "9"
    finally:
        finished(cli(env, "stop"))
