"""ONNX Runtime sessions: provider choice and one cached session per model file and process."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

_PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees; 0 without a driver. Asks libcuda directly, so it prints nothing."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def select_providers(
    preference: Sequence[str] | None = None,
    *,
    available: Sequence[str] | None = None,
    gpus: int | None = None,
) -> list[str]:
    """Execution providers to use, best first: CUDA when it is built in and a GPU is there, then CPU.

    `preference` ("cuda", "cpu") restricts and orders the choice; a preferred provider that is not
    usable here is left out with a log line, and CPU is always the last resort.
    """
    built_in = set(ort.get_available_providers() if available is None else available)
    gpu_count = cuda_device_count() if gpus is None else gpus
    usable = {
        "cuda": _PROVIDER_NAMES["cuda"] in built_in and gpu_count > 0,
        "cpu": _PROVIDER_NAMES["cpu"] in built_in,
    }
    wanted = list(preference) if preference else ["cuda", "cpu"]
    unknown = [name for name in wanted if name not in _PROVIDER_NAMES]
    if unknown:
        raise ValueError(f"unknown execution provider(s) {unknown}; choose from {sorted(_PROVIDER_NAMES)}")
    chosen = [_PROVIDER_NAMES[name] for name in wanted if usable[name]]
    skipped = [name for name in wanted if not usable[name]]
    if skipped and preference:
        log.info("execution provider(s) %s not usable here (GPUs seen: %d)", skipped, gpu_count)
    if _PROVIDER_NAMES["cpu"] not in chosen:
        chosen.append(_PROVIDER_NAMES["cpu"])
    return chosen


def runs_on_gpu(session: ort.InferenceSession) -> bool:
    """Whether the session's first provider, the one its models run on, is CUDA."""
    return bool(session.get_providers()[0] == _PROVIDER_NAMES["cuda"])


def create_session(
    path: Path,
    providers: Sequence[str],
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    spinning: bool = True,
) -> ort.InferenceSession:
    """A new session on `path`; thread counts of 0 keep ONNX Runtime's defaults. Without
    `spinning`, idle threads sleep instead of busy-waiting, which several model processes
    sharing a few cores need."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: no provider warnings on CPU-only machines
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    provider_args: list[Any] = []
    for name in providers:
        if name == _PROVIDER_NAMES["cuda"]:
            _preload_cuda_libraries()
            provider_args.append((name, {"arena_extend_strategy": "kSameAsRequested"}))
        else:
            provider_args.append(name)
    session = ort.InferenceSession(str(path), sess_options=options, providers=provider_args)
    log.info("loaded %s on %s", path.name, session.get_providers()[0])
    return session


@lru_cache(maxsize=16)
def cached_session(
    path: Path, providers: tuple[str, ...], intra_op_threads: int, inter_op_threads: int, spinning: bool = True
) -> ort.InferenceSession:
    """One session per model file, providers and thread settings in this process, reused."""
    return create_session(
        path, providers, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads, spinning=spinning
    )


@lru_cache(maxsize=1)
def _preload_cuda_libraries() -> None:
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # libraries may already be on the loader path
            log.debug("onnxruntime.preload_dlls: %s", exc)
