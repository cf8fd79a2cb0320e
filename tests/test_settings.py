"""Settings in sections, read from flat variable names, `.env` and `.env.<ENV>`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facecluster.deployment import worker_env
from facecluster.runtime import free_ports
from facecluster.settings import SECTION_OF, SECTIONS, Settings

pytestmark = pytest.mark.fast


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No facecluster or seed variable from the caller's environment; the working directory is empty."""
    names = {
        v.lower()
        for model in SECTIONS.values()
        for f in model.model_fields.values()
        for v in f.validation_alias.choices
    }  # type: ignore[union-attr]
    for key in list(__import__("os").environ):
        if key.lower() in names or key.upper() == "ENV":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_setting_has_one_section_and_its_flat_variable(clean_env: Path) -> None:
    assert len(SECTION_OF) == sum(len(model.model_fields) for model in SECTIONS.values())
    for name, section in SECTION_OF.items():
        choices = SECTIONS[section].model_fields[name].validation_alias.choices  # type: ignore[union-attr]
        assert choices[0] == f"FACECLUSTER_{name.upper()}"


def test_flat_names_from_the_environment_and_from_callers(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE_PERSON_MATCH_THRESHOLD", "0.55")
    monkeypatch.setenv("facecluster_read_batch_size", "7")  # names are case-insensitive
    monkeypatch.setenv("MONGO_DB_NAME", "photos")
    settings = Settings(data_dir=clean_env / "data", unknown_min_cluster_size=4)
    assert settings.clustering.person_match_threshold == 0.55
    assert settings.ingest.read_batch_size == 7
    assert settings.stores.mongo_db == "photos"
    assert settings.general.data_dir == clean_env / "data" and settings.clustering.unknown_min_cluster_size == 4


def test_the_environment_beats_env_files_and_env_dev_beats_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("FACECLUSTER_DETECTOR=yunet-s\nMONGO_DB=from-env-file\nENV=dev\n")
    (clean_env / ".env.dev").write_text("MONGO_DB=from-env-dev\nFACECLUSTER_MIN_FACE_SIZE=33\n")
    monkeypatch.setenv("FACECLUSTER_MIN_FACE_SIZE", "40")
    settings = Settings()
    assert settings.models.detector == "yunet-s"
    assert settings.stores.mongo_db == "from-env-dev"
    assert settings.detection.min_face_size == 40
    assert Settings(_env_file=None).models.detector == "yolov5n-0.5-face"  # no file read when told so


def test_updated_validates_and_refuses_unknown_names(clean_env: Path) -> None:
    settings = Settings(_env_file=None)
    changed = settings.updated(api_keys="ops:secret,viewer:other", cluster_max_faces=10)
    assert [k.get_secret_value() for k in changed.serve.api_keys] == ["ops:secret", "viewer:other"]
    assert changed.clustering.cluster_max_faces == 10 and settings.clustering.cluster_max_faces is None
    with pytest.raises(ValueError, match="unknown settings: colour"):
        settings.updated(colour="red")
    with pytest.raises(ValueError, match="providers must not repeat"):
        settings.updated(providers="cpu,cpu")


def test_to_env_round_trips_without_secrets(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, data_dir=clean_env, qdrant_api_key="k", unknown_eps=0.4, cors_origins="a,b")
    env = settings.to_env()
    assert "FACECLUSTER_QDRANT_API_KEY" not in env and env["FACECLUSTER_CORS_ORIGINS"] == "a,b"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings(_env_file=None)
    assert again.flat() == {**settings.flat(), "qdrant_api_key": None}


def test_the_seeds_model_and_store_names(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_MODEL_NAME", "FACENET")
    with pytest.raises(ValueError, match="set EMBED_MODEL_PATH"):
        Settings(_env_file=None)
    monkeypatch.setenv("EMBED_MODEL_PATH", str(clean_env / "facenet.onnx"))
    assert Settings(_env_file=None).models.embedder == "facenet"
    monkeypatch.delenv("EMBED_MODEL_NAME")
    assert Settings(_env_file=None).models.embedder == "facenet"  # a path alone is the user's own FaceNet
    monkeypatch.setenv("FACECLUSTER_DETECTOR", "retinaface")
    with pytest.raises(ValueError, match=r"unknown detector 'retinaface'; known: .*yolov5n-0\.5-face"):
        Settings(_env_file=None)
    monkeypatch.setenv("FACECLUSTER_DETECTOR", "YuNet-S")
    monkeypatch.setenv("YOLO_MODEL_PATH", str(clean_env / "my-yolo.onnx"))
    monkeypatch.setenv("QDRANT_HOST", "qdrant.internal")
    monkeypatch.setenv("QDRANT_PORT", "6334")
    settings = Settings(_env_file=None)
    assert settings.models.detector == "yunet-s" and settings.models.detector_path == clean_env / "my-yolo.onnx"
    assert settings.stores.qdrant_url == "http://qdrant.internal:6334"  # never the embedded one


def test_a_setting_may_come_from_a_file_and_only_the_reference_travels(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / "keys").write_text("ops:s3cret\n")
    monkeypatch.setenv("FACECLUSTER_API_KEYS_FILE", str(clean_env / "keys"))
    monkeypatch.setenv("MONGO_URI", "mongodb://app:pw@db:27017/")
    settings = Settings(_env_file=None, data_dir=clean_env)
    assert [key.get_secret_value() for key in settings.serve.api_keys] == ["ops:s3cret"]
    env = worker_env(settings)
    assert env["FACECLUSTER_API_KEYS_FILE"] == str(clean_env / "keys")
    assert "s3cret" not in repr(env) and "pw@" not in repr(env)


def test_free_ports_are_different_and_avoid_the_taken_ones() -> None:
    """A Ray head given one port for two of its components does not start: the ports asked for at once differ."""
    taken = set(free_ports(5))
    ports = free_ports(50, taken=taken)
    assert len(set(ports)) == 50 and not taken & set(ports)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("QDRANT_PORT", "notaport", "QDRANT_PORT='notaport': Input should be a valid integer"),
        ("FACECLUSTER_DECODE_MIN_SIDE", "abc", "FACECLUSTER_DECODE_MIN_SIDE='abc': Input should be a valid integer"),
        ("FACECLUSTER_DETECTOR", "nosuch", "FACECLUSTER_DETECTOR='nosuch': unknown detector 'nosuch'; known: "),
        ("EMBED_MODEL_NAME", "FACENET", "the facenet embedder is your own file: set EMBED_MODEL_PATH to its path"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_never_a_traceback(
    clean_env: Path, variable: str, value: str, said: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() != variable} | {variable: value}
    command = [sys.executable, "-m", "facecluster.cli.main", "status"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert f"invalid settings: {said}" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
