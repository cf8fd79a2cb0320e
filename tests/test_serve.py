"""The API on a real Ray Serve (`facecluster serve` against a `ray start` cluster), driven by the seeds'
own curl examples, and a schemathesis run over the OpenAPI spec."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import BIN, ROOT, SHARED, RayHead, _need, facecluster_serve, free_port, get_json, stop_embedded

PEOPLE = ("obama", "biden", "kit_harington", "rose_leslie")


def seed_curls() -> list[str]:
    """Every curl command of the seed documents, continuation lines joined."""
    commands = []
    for path in sorted(_need(SHARED / "seeds").glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            line = lines[index].strip()
            if line.startswith("curl "):
                command = line
                while command.endswith("\\") and index + 1 < len(lines):
                    index += 1
                    command = command[:-1].rstrip() + " " + lines[index].strip()
                commands.append(command)
            index += 1
    return commands


get = get_json


@contextmanager
def serving(ray_head: RayHead, photos_dir: Path, models_dir: Path, tmp_path: Path, **env_extra: str) -> Iterator[str]:
    """`facecluster serve` on a free loopback port, libraries under a local root; yields its base URL."""
    root = tmp_path / "libraries"
    for person in PEOPLE:
        shutil.copytree(photos_dir / "enrol" / person, root / "my-bucket" / "my-sub" / person)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_head.gcs,
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FACECLUSTER_MODELS_DIR": str(models_dir),
        "FACECLUSTER_DATA_DIR": str(data),
        "FACECLUSTER_LIBRARY_ROOT": str(root),
        "FACECLUSTER_RAY_DASHBOARD_URL": ray_head.dashboard,
        "FACE_UNKNOWN_MIN_CLUSTER_SIZE": "2",
        **env_extra,
    }
    try:
        with facecluster_serve(env, tmp_path / "serve.log") as base:
            yield base
    finally:
        stop_embedded(data)


@pytest.fixture
def served(ray_head: RayHead, photos_dir: Path, models_dir: Path, tmp_path: Path) -> Iterator[str]:
    with serving(ray_head, photos_dir, models_dir, tmp_path) as base:
        yield base


def curl(command: str, base: str, substitutions: dict[str, str]) -> tuple[int, Any]:
    """Run a seed's curl command as written, with the host and its placeholders replaced."""
    command = command.replace("http://localhost:8000", base)
    for placeholder, value in substitutions.items():
        command = command.replace(placeholder, value)
    done = subprocess.run(
        ["bash", "-c", command + ' -s -w "\\n%{http_code}"'], capture_output=True, text=True, timeout=120
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body) if body.strip() else None


def wait_for_job(base: str, job_id: str, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 400
    while True:
        job: dict[str, Any] = get(f"{base}/api/v1/jobs/{job_id}", key)
        if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(2)


def test_every_seed_curl_example_works_on_ray_serve(served: str, photos_dir: Path) -> None:
    commands = seed_curls()
    by_route = {re.search(r"(/[a-z\-]+(?:/[^\s\"?']*)?)", c.split("localhost:8000", 1)[1]).group(1): c  # type: ignore[union-attr]
                for c in commands}  # fmt: skip
    face = str(photos_dir / "enrol" / "obama" / "obama.jpg")

    status, body = curl(by_route["/detect-face"], served, {"/path/to/face.jpg": face})
    assert status == 201, body

    status, body = curl(by_route["/cluster-bucket-persons/my-bucket/my-sub"], served, {})
    assert status == 202, body
    job = wait_for_job(served, body["job_id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["result"]["ingest"]["images"] == 10 and job["result"]["cluster"]["clusters"] == len(PEOPLE)
    assert job["kind"] == "cluster-bucket-persons", job
    assert job["progress"].startswith("cluster my-bucket/my-sub: recording the run"), job  # the run reports its steps

    runs = get(f"{served}/person-cluster-status/my-bucket/my-sub")["runs"]
    assign = next(c for route, c in by_route.items() if route.startswith("/assignments/"))
    status, body = curl(assign, served, {"<ObjectId>": runs[0]["clustering_id"]})
    assert status == 200 and body["strategy"] == "centroid" and body["threshold"] == 0.7, body

    cluster_id = get(f"{served}/api/v1/faces/clusters?library=my-bucket/my-sub")["clusters"][0]["cluster_id"]
    labels = [c for c in commands if "/label" in c]
    assert len(labels) == 2  # with `clu_abc123def456` and with `{cluster_id}`
    status, body = curl(labels[0], served, {"clu_abc123def456": cluster_id})
    assert status == 200 and body["name"] == "Alice", body

    dual = [c for c in commands if "/cluster/dual" in c]
    status, body = curl(next(c for c in dual if '"queue": false' in c), served, {})
    assert status == 200 and body["queued"] is False and body["persons"] == 1, body
    status, body = curl(next(c for c in dual if '"queue": true' in c), served, {})
    assert status == 200 and body["queued"] is True, body
    assert wait_for_job(served, body["job_id"])["status"] == "SUCCEEDED"

    status, body = curl(labels[1], served, {"{cluster_id}": cluster_id})
    assert status == 404  # that cluster is the person Alice now: a clear 404, not a second label
    # Training is a Ray job too; one labelled person is not enough, and the job says so.
    status, body = curl(by_route["/api/v1/faces/train"], served, {})
    assert status == 200 and body["queued"] is True, body
    job = wait_for_job(served, body["job_id"])
    assert job["status"] == "FAILED" and "at least 4 labelled persons" in job["result"]["error"], job
    status, stopped = curl(f"curl -X DELETE http://localhost:8000/api/v1/jobs/{body['job_id']}", served, {})
    assert status == 200 and stopped["stop_requested"] is False and stopped["status"] == "FAILED"  # it had ended
    assert curl("curl -X DELETE http://localhost:8000/api/v1/jobs/raysubmit_none", served, {})[0] == 404

    assert set(by_route) <= {
        "/api/v1/faces/train",
        "/detect-face", "/cluster-bucket-persons/my-bucket/my-sub", "/api/v1/faces/cluster/dual",
        "/api/v1/faces/clusters/clu_abc123def456/label", "/api/v1/faces/clusters/{cluster_id}/label",
        next(route for route in by_route if route.startswith("/assignments/")),
    }  # fmt: skip


def test_serve_run_of_the_config_refuses_an_open_bind_without_keys(
    ray_head: RayHead, models_dir: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    config["http_options"] |= {"host": "0.0.0.0", "port": free_port()}
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **{k: v for k, v in os.environ.items() if "API_KEYS" not in k},
        "RAY_ADDRESS": ray_head.gcs,
        "FACECLUSTER_MODELS_DIR": str(models_dir),
        "FACECLUSTER_DATA_DIR": str(tmp_path / "data"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path / "serve-run.log"
    server = subprocess.Popen(
        [str(BIN / "serve"), "run", str(path)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "refusing to serve on 0.0.0.0 without API keys" not in log.read_text():
            assert server.poll() is None or time.monotonic() < deadline, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Api replica did not refuse the open bind"
            time.sleep(1)
        port = config["http_options"]["port"]
        with pytest.raises(OSError):  # nothing answers on the open address: refused, or 404/503 from the proxy
            get(f"http://127.0.0.1:{port}/health")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        stop_embedded(tmp_path / "data")


def test_serve_without_the_model_files_refuses_before_starting_anything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FACECLUSTER_MODELS_DIR": str(tmp_path / "empty"),
        "FACECLUSTER_DATA_DIR": str(tmp_path / "data"),
        "FACECLUSTER_SERVE_PORT": str(free_port()),
    }
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([str(BIN / "facecluster"), "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{tmp_path / 'empty'}" in done.stderr and "facecluster models pull" in done.stderr
    assert not (tmp_path / "data" / "ray").exists()  # no Ray head was started for it
