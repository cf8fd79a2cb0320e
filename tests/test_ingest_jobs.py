"""Ingest as separate processes: kill -9 and resume, and `ray job submit` to a `ray start` cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .conftest import ROOT, RayHead, stop_embedded

BIN = Path(sys.executable).parent
PHOTOS = 160


@pytest.fixture(scope="module")
def lfw_folder(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first photos of LFW, copied: enough work that a run can be killed part-way."""
    folder = tmp_path_factory.mktemp("lfw") / "people"
    folder.mkdir()
    for path in sorted((lfw_dir / "images").rglob("*.jpg"))[:PHOTOS]:
        shutil.copy(path, folder / path.name)
    return folder


def job_env(models_dir: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FACECLUSTER_MODELS_DIR": str(models_dir),
        "FACECLUSTER_DATA_DIR": str(data_dir),
        "FACECLUSTER_WRITE_BATCH_SIZE": "8",
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def ingest(env: dict[str, str], folder: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(BIN / "facecluster"), "ingest", str(folder), "--library", "people"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def stored(data_dir: Path) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    """Face ids with their image, and image states, as the embedded MongoDB holds them."""
    port = (data_dir / "mongo" / "nx.port").read_text().strip()
    with MongoClient(f"mongodb://127.0.0.1:{port}/") as client:
        db = client["facecluster"]
        faces = {doc["_id"]: doc["image"] for doc in db.faces.find({"library": "people"})}
        images = {doc["key"]: (doc["status"], doc["faces"]) for doc in db.images.find({"library": "people"})}
    return faces, images


def images_written(data_dir: Path) -> int:
    """Photos the run has finished so far; 0 while its MongoDB-wire server is not up or is busy."""
    port_file = data_dir / "mongo" / "nx.port"
    if not port_file.exists():
        return 0
    uri = f"mongodb://127.0.0.1:{port_file.read_text().strip()}/"
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            return client["facecluster"].images.count_documents({"library": "people"})
    except PyMongoError:
        return 0


def check(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run([str(BIN / "facecluster"), "check"], env=env, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def data_dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    dirs = {name: tmp_path / name for name in ("clean", "killed", "worker")}
    yield dirs
    for data in dirs.values():
        stop_embedded(data)


def start_and_kill(env: dict[str, str], folder: Path, data_dir: Path, *, victim: str | None) -> None:
    """Start an ingest and, once 16 photos are stored, SIGKILL the driver (victim None) or the
    worker whose command line contains `victim`."""
    run = subprocess.Popen(
        [str(BIN / "facecluster"), "ingest", str(folder), "--library", "people"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while images_written(data_dir) < 16:
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run wrote nothing in time"
            time.sleep(0.05)
        if victim is None:
            run.send_signal(signal.SIGKILL)
            run.wait()
            written = stored(data_dir)[1]
            assert len(written) < PHOTOS, f"the run had finished ({len(written)} images) before the kill"
            return
        worker = subprocess.run(["pgrep", "-f", victim], capture_output=True, text=True).stdout.split()
        assert worker, f"no worker process matching {victim!r}"
        os.kill(int(worker[0]), signal.SIGKILL)
        assert run.wait(timeout=300) == 0, "the run did not survive a killed worker"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_killed_runs_resume_to_the_state_of_a_clean_run(
    lfw_folder: Path, models_dir: Path, data_dirs: dict[str, Path]
) -> None:
    clean = ingest(job_env(models_dir, data_dirs["clean"]), lfw_folder)
    assert clean["images"] == PHOTOS and clean["skipped"] == 0 and clean["failed"] == 0
    clean_faces, clean_images = stored(data_dirs["clean"])
    assert len(clean_faces) == clean["faces"] > 0

    # kill -9 of the driver part-way, then the same command again.
    killed_env = job_env(models_dir, data_dirs["killed"])
    start_and_kill(killed_env, lfw_folder, data_dirs["killed"], victim=None)
    resumed = ingest(killed_env, lfw_folder)
    assert resumed["skipped"] >= 16, "the resumed run redid finished photos"
    assert resumed["images"] == PHOTOS and resumed["failed"] == 0
    assert stored(data_dirs["killed"]) == (clean_faces, clean_images)
    report = check(killed_env)
    assert report["consistent"] and report["faces"] == report["points"] == len(clean_faces)

    # kill -9 of the writer worker mid-run: Ray restarts it, the batch is written again, same result.
    worker_env = job_env(models_dir, data_dirs["worker"])
    start_and_kill(worker_env, lfw_folder, data_dirs["worker"], victim=r"MapBatches\(Writer\)")
    assert stored(data_dirs["worker"]) == (clean_faces, clean_images)
    assert check(worker_env)["consistent"]


def test_ray_job_submit_runs_the_ingest_and_lists_it(
    ray_head: RayHead, photos_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    data_dir = tmp_path / "data"
    runtime_env = {"env_vars": {"FACECLUSTER_MODELS_DIR": str(models_dir), "FACECLUSTER_DATA_DIR": str(data_dir)}}
    command = [
        str(BIN / "ray"), "job", "submit", "--address", ray_head.dashboard, "--working-dir", str(ROOT),
        "--runtime-env-json", json.dumps(runtime_env),
        "--", "python", "jobs/ingest.py", str(photos_dir / "group"), "--library", "submitted",
    ]  # fmt: skip
    try:
        for _ in range(10):  # the dashboard answers a few seconds before its job agent does
            submitted = subprocess.run(
                command, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, timeout=600
            )
            if "No available agent" not in submitted.stderr + submitted.stdout:
                break
            time.sleep(3)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        jobs = JobSubmissionClient(ray_head.dashboard).list_jobs()  # what the dashboard's job list shows
        ours = [job for job in jobs if "jobs/ingest.py" in job.entrypoint]
        assert len(ours) == 1 and ours[0].status == JobStatus.SUCCEEDED
        logs = JobSubmissionClient(ray_head.dashboard).get_job_logs(ours[0].submission_id)
        summary = json.loads(next(line for line in reversed(logs.splitlines()) if line.startswith("{")))
        assert summary["library"] == "submitted" and summary["images"] == 18 and summary["faces"] > 100
    finally:
        stop_embedded(data_dir)


def test_pipeline_cluster_stats_and_export_from_the_command_line(
    photos_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    env = job_env(models_dir, tmp_path / "data")
    folder = tmp_path / "enrol"
    shutil.copytree(photos_dir / "enrol", folder)
    try:
        done = subprocess.run(
            [str(BIN / "facecluster"), "pipeline", str(folder), "--min-cluster-size", "2", "--train", "--epochs", "2"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.splitlines()[-1])
        assert result["ingest"]["images"] == 12 and result["ingest"]["failed"] == 0
        # Five people with 2-3 photos each: one cluster each at a minimum size of 2.
        assert result["cluster"]["method"] == "dual" and result["cluster"]["clusters"] == 5
        assert result["stats"]["clusters"] == 5 and result["stats"]["faces_per_person"]["2"] >= 1
        # The full pipeline trains only on human labels; none yet, so it says so and goes on.
        assert "at least 4 labelled persons" in result["train"]["skipped"] and "recluster" not in result

        run = [str(BIN / "facecluster")]
        stats = json.loads(subprocess.run([*run, "stats", "--library", "enrol"], env=env, capture_output=True,
                                          text=True, timeout=120).stdout.splitlines()[-1])  # fmt: skip
        assert stats == result["stats"]
        exported = subprocess.run(
            [*run, "export", "faces", "--library", "enrol"], env=env, capture_output=True, text=True, timeout=120
        ).stdout.splitlines()
        faces = [json.loads(line) for line in exported]
        clustered = [f for f in faces if f["cluster_id"]]
        assert len({f["cluster_id"] for f in clustered}) == 5 and all(
            f["cluster_id"].startswith("clu_") for f in clustered
        )

        def facecluster(*arguments: str) -> list[dict[str, object]]:
            done = subprocess.run([*run, *arguments], env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

        obama = sorted(str(p) for p in (folder / "obama").iterdir())[:2]
        added = facecluster("profiles", "add", "obama", *obama)
        assert [a["faces"] for a in added] == [1, 2]  # the second photo extends the profile
        assert [p["user_id"] for p in facecluster("profiles", "list")] == ["obama"]
        report = facecluster("assign", "--library", "enrol", "--strategy", "vote")[0]
        assert report["assigned"] == 1 and report["unassigned"] == 4  # only Obama has a profile
        assert facecluster("match", "--library", "enrol")[0]["considered"] >= 0
        assert facecluster("profiles", "delete", "obama")[0]["assignments_deleted"] == 1
        refused = subprocess.run([*run, "train", "--rollback"], env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "nothing to roll back" in refused.stderr
    finally:
        stop_embedded(tmp_path / "data")
