"""The `facecluster` console script, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("facecluster")


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, **(env or {})}
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=merged, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def env(models_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {"FACECLUSTER_MODELS_DIR": str(models_dir), "FACECLUSTER_DATA_DIR": str(tmp_path / "data")}


def test_detect_prints_one_json_object_per_image_and_survives_bad_files(
    env: dict[str, str], photos_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos_dir / "group" / "insightface_t1.jpg", folder / "a_group.jpg")
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_garbage.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not a photo, not listed")
    result = run("detect", str(folder), str(photos_dir / "enrol" / "biden" / "biden.jpg"), env=env)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["path"]).name for line in lines] == ["a_group.jpg", "b_empty.jpg", "c_garbage.png", "biden.jpg"]
    group, empty, garbage, biden = lines
    assert (group["width"], group["height"]) == (1280, 886)
    assert len(group["faces"]) == 6
    face = group["faces"][0]
    assert set(face) == {"bbox", "score", "landmarks", "quality"}
    assert len(face["bbox"]) == 4 and len(face["landmarks"]) == 5 and 0 <= face["quality"]["score"] <= 1
    assert empty["error"].startswith("empty") and garbage["error"].startswith("not_an_image")
    assert len(biden["faces"]) == 1


def test_detect_thresholds_from_the_command_line(env: dict[str, str], photos_dir: Path) -> None:
    crowd = str(photos_dir / "group" / "insightface_worlds-largest-selfie.jpg")
    loose = json.loads(run("detect", crowd, "--min-confidence", "0.3", env=env).stdout)
    strict = json.loads(run("detect", crowd, "--min-confidence", "0.7", "--min-face-size", "25", env=env).stdout)
    assert len(loose["faces"]) > len(strict["faces"]) > 0


@pytest.mark.fast
def test_config_show_masks_secrets_and_reads_seed_names(env: dict[str, str]) -> None:
    result = run(
        "config",
        "show",
        env={
            **env,
            "MONGO_URI": "mongodb://admin:hunter2@db:27017",
            "QDRANT_API_KEY": "s3cret",
            "FACE_PERSON_MATCH_THRESHOLD": "0.55",
            "FACE_UNKNOWN_CLUSTERING_METHOD": "dbscan",
        },
    )
    shown = json.loads(result.stdout)
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    assert shown["stores"]["mongo_uri"] == shown["stores"]["qdrant_api_key"] == "**********"
    clustering = shown["clustering"]
    assert clustering["person_match_threshold"] == 0.55 and clustering["unknown_clustering_method"] == "dbscan"
    assert shown["general"]["models_dir"] == env["FACECLUSTER_MODELS_DIR"]


@pytest.mark.fast
def test_bad_settings_are_refused_with_the_reason(env: dict[str, str]) -> None:
    result = run("config", "show", env={**env, "FACECLUSTER_PROVIDERS": "cpu,cpu"}, check=False)
    assert result.returncode != 0 and "providers must not repeat" in result.stderr


def test_models_list_and_verify(env: dict[str, str]) -> None:
    listed = [json.loads(line) for line in run("models", "list", env=env).stdout.splitlines()]
    names = {entry["name"] for entry in listed}
    assert {"yolov5n-0.5-face", "yunet-s", "yolov8-lite-t-face", "mobilefacenet", "facenet"} <= names
    for entry in listed:
        assert entry["licence"] and entry["input"] and entry["outputs"]
    verified = {e["name"]: e["status"] for e in map(json.loads, run("models", "verify", env=env).stdout.splitlines())}
    assert verified["mobilefacenet"] == verified["yolov5n-0.5-face"] == "ok"


def test_missing_models_give_a_clear_error(tmp_path: Path, photos_dir: Path) -> None:
    result = run(
        "detect",
        str(photos_dir / "enrol" / "biden" / "biden.jpg"),
        env={"FACECLUSTER_MODELS_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2
    assert "facecluster models pull" in result.stderr


def test_offline_pull_fails_with_instructions(tmp_path: Path) -> None:
    result = run(
        "models",
        "pull",
        "mobilefacenet",
        env={"FACECLUSTER_MODELS_DIR": str(tmp_path), "FACECLUSTER_MODEL_BASE_URL": "http://127.0.0.1:9"},
        check=False,
    )
    assert result.returncode == 1
    assert "by hand" in result.stderr


def test_eval_verify_prints_json_last(env: dict[str, str], lfw_dir: Path, tmp_path: Path) -> None:
    lines = (lfw_dir / "pairsDevTrain.txt").read_text().splitlines()[1:]
    subset = tmp_path / "pairs.txt"
    subset.write_text("\n".join(lines[:30] + lines[1100:1130]) + "\n")  # 30 matched, 30 mismatched, no header
    result = run("eval", "verify", "--images", str(lfw_dir / "images"), "--pairs", str(subset), env=env)
    report = json.loads(result.stdout.splitlines()[-1])
    assert set(report) == {"accuracy", "std", "threshold", "pairs", "no_face"}
    assert report["pairs"] == 60 and report["accuracy"] >= 0.95


def test_bench_engine_reports_each_batch_size(env: dict[str, str], photos_dir: Path) -> None:
    result = run(
        "bench", "engine", "--images", str(photos_dir / "group"), "--batch-sizes", "1,2", "--repeats", "1", env=env
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert [row["batch"] for row in report["rows"]] == [1, 2]
    assert all(row["detector_ms_per_image"] > 0 and row["embedder_ms_per_face"] > 0 for row in report["rows"])
    assert report["peak_rss_mib"] > 0 and report["provider"] == "CPUExecutionProvider"


def test_bench_ingest_compares_the_pipeline_cold_and_warm_with_the_loops(
    env: dict[str, str], photos_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "photos"
    shutil.copytree(photos_dir / "group", source)
    result = run("bench", "ingest", str(source), "--limit", "4", "--runs", "cw,a2,b", env=env)
    report = json.loads(result.stdout.splitlines()[-1])
    runs = ("c_ray_pipeline", "cw_warm_head", "a2_decode_and_models", "b_naive_loop")
    assert all(report[run]["images_per_s"] > 0 and report[run]["peak_pss_mib"] > 0 for run in runs)
    # Both pipeline runs stored every face of the four photos, each into a library of its own.
    assert report["c_ray_pipeline"]["faces_per_s"] * report["c_ray_pipeline"]["seconds"] == pytest.approx(
        report["cw_warm_head"]["faces_per_s"] * report["cw_warm_head"]["seconds"], rel=0.01
    )
    assert {"c_over_a2", "c_over_b", "cw_over_a2", "cw_over_b"} <= set(report) and "a_model_only" not in report
    assert report["images"] == 4 and report["ray_start_s"] > 0
    refused = run("bench", "ingest", str(source), "--runs", "c,d", env=env, check=False)
    assert refused.returncode == 2 and "runs are any of c,cw,a,a2,b" in refused.stderr


def test_status_shows_and_stop_ends_the_embedded_server(env: dict[str, str], tmp_path: Path) -> None:
    scoped = {**env, "FACECLUSTER_DATA_DIR": str(tmp_path / "data")}
    assert json.loads(run("status", env=scoped).stdout)["embedded_mongodb"]["running"] is False
    run("stats", env=scoped)  # any command that needs MongoDB starts the embedded server
    status = json.loads(run("status", env=scoped).stdout)
    assert status["mongodb"] == "embedded" and status["embedded_mongodb"]["running"] is True
    assert json.loads(run("stop", env=scoped).stdout)["stopped"] == {"ray": False, "mongodb": True}
    assert json.loads(run("status", env=scoped).stdout)["embedded_mongodb"]["running"] is False


def test_a_queued_job_without_the_apis_store_fails_clearly(env: dict[str, str], tmp_path: Path) -> None:
    scoped = {**env, "FACECLUSTER_DATA_DIR": str(tmp_path / "data")}
    scoped = {k: v for k, v in scoped.items() if k.upper() not in ("MONGO_URI", "FACECLUSTER_MONGO_URI", "MONGODB_URL")}
    result = run("job", "cluster-dual", "--id", "job_1", "--options", '{"library": "a/b"}', env=scoped, check=False)
    assert result.returncode == 2 and "this node has no MONGO_URI" in result.stderr
    assert not (tmp_path / "data" / "mongo").exists()  # no MongoDB of its own was started
