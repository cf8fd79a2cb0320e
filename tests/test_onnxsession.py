"""Execution provider choice and session reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecluster.engine.sessions import cached_session, select_providers

BUILT_IN = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_first_when_a_gpu_is_there() -> None:
    assert select_providers(available=BUILT_IN, gpus=1) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_only_when_cuda_is_built_in_but_no_gpu_is_there() -> None:
    # onnxruntime-gpu lists CUDA even on machines without a GPU; asking for it would log errors.
    assert select_providers(available=BUILT_IN, gpus=0) == ["CPUExecutionProvider"]


def test_cpu_build_without_cuda() -> None:
    assert select_providers(available=["CPUExecutionProvider"], gpus=2) == ["CPUExecutionProvider"]


def test_preference_restricts_and_orders() -> None:
    assert select_providers(["cpu"], available=BUILT_IN, gpus=1) == ["CPUExecutionProvider"]
    assert select_providers(["cpu", "cuda"], available=BUILT_IN, gpus=1) == [
        "CPUExecutionProvider",
        "CUDAExecutionProvider",
    ]
    assert select_providers(["cuda"], available=BUILT_IN, gpus=0) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown execution provider"):
        select_providers(["tpu"], available=BUILT_IN, gpus=0)


def test_sessions_are_reused_and_quiet(models_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = models_dir / "mobilefacenet_foamliu_dyn.onnx"
    providers = tuple(select_providers())
    first = cached_session(path, providers, 1, 1)
    assert cached_session(path, providers, 1, 1) is first
    assert first.get_providers()[-1] == "CPUExecutionProvider"
    # Loading this model makes onnxruntime warn about unused initialisers unless told to be quiet.
    cached_session.cache_clear()
    cached_session(path, providers, 1, 1)
    assert "onnxruntime" not in capfd.readouterr().err
