"""`models pull` from a real HTTP server, sha256 checks, derivation, and the offline message."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from facecluster.engine.modelstore import (
    ModelFetchError,
    derive_dynamic_batch,
    git_blob_id,
    pull_model,
    sha256_of,
    verify_models,
)
from facecluster.engine.registry import load_registry


@pytest.fixture
def upstream_server(models_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server laid out like <base>/<repo>/<commit>/<path>, holding the originals we have."""
    registry = load_registry()
    root = tmp_path / "upstream"
    for name, original in [("yolov5n-0.5-face", "yolov5n-0.5-face.onnx"), ("yunet-s", "yunet_s_dynamic.onnx")]:
        up = registry.detector(name).upstream
        assert up is not None
        target = root / up.repo / up.commit / up.path
        target.parent.mkdir(parents=True)
        shutil.copy(models_dir / original, target)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_pull_downloads_checks_and_derives(upstream_server: str, tmp_path: Path, models_dir: Path) -> None:
    registry = load_registry()
    target = tmp_path / "models"
    status = pull_model(registry.detector("yolov5n-0.5-face"), target, upstream_server)
    assert status.status == "ok"
    pulled = (target / "yolov5n-0.5-face_dynbatch.onnx").read_bytes()
    # The derivation reproduces the shared dynamic-batch build byte for byte.
    assert pulled == (models_dir / "yolov5n-0.5-face_dynbatch.onnx").read_bytes()
    assert pull_model(registry.detector("yunet-s"), target, upstream_server).status == "ok"
    states = {s.name: s.status for s in verify_models(target)}
    assert states["yolov5n-0.5-face"] == "ok" and states["yunet-s"] == "ok" and states["mobilefacenet"] == "missing"


def test_pull_refuses_a_file_whose_hash_does_not_match(upstream_server: str, tmp_path: Path) -> None:
    spec = load_registry().detector("yolov5n-0.5-face")
    tampered = spec.model_copy(update={"upstream": spec.upstream.model_copy(update={"sha256": "0" * 64})})
    with pytest.raises(ModelFetchError, match="expected 0000"):
        pull_model(tampered, tmp_path / "models", upstream_server)
    assert not (tmp_path / "models" / spec.file).exists()


def test_offline_pull_says_how_to_place_files_by_hand(tmp_path: Path) -> None:
    spec = load_registry().embedder("mobilefacenet")
    with pytest.raises(ModelFetchError) as caught:
        pull_model(spec, tmp_path, "http://127.0.0.1:9", timeout=2)
    message = str(caught.value)
    assert "by hand" in message and "Alen-Chen/MobileFaceNet" in message and spec.file in message


def test_verify_reports_a_tampered_file(tmp_path: Path, models_dir: Path) -> None:
    shutil.copy(models_dir / "yunet_s_dynamic.onnx", tmp_path / "yunet_s_dynamic.onnx")
    with (tmp_path / "yunet_s_dynamic.onnx").open("ab") as handle:
        handle.write(b"\0")
    states = {s.name: s.status for s in verify_models(tmp_path)}
    assert states["yunet-s"] == "mismatch"


def test_derived_model_runs_any_batch_with_identical_outputs(models_dir: Path) -> None:
    original = (models_dir / "yolov8-lite-t-face.onnx").read_bytes()
    derived = derive_dynamic_batch(original)
    assert sha256_of(derived) in load_registry().detector("yolov8-lite-t-face").sha256
    options = ort.SessionOptions()
    options.log_severity_level = 3
    fixed = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"])
    dynamic = ort.InferenceSession(derived, options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((3, 3, 640, 640), dtype=np.float32)
    together = dynamic.run(None, {"images": batch})
    for i in range(3):
        alone = fixed.run(None, {"images": batch[i : i + 1]})
        for a, b in zip(together, alone, strict=True):
            assert np.array_equal(a[i : i + 1], b)


def test_git_blob_id_matches_git() -> None:
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
