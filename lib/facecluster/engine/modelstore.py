"""The models directory: fetch from upstream (`pull`), check (`verify`), derive dynamic-batch files."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from onnx import numpy_helper

from facecluster.engine.registry import ModelSpec, Upstream, load_registry

log = logging.getLogger(__name__)

Status = Literal["ok", "missing", "mismatch", "unpinned"]


class ModelFetchError(RuntimeError):
    """A model could not be fetched or did not match its recorded hash."""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    file: str
    status: Status
    sha256: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "file": self.file, "status": self.status, "sha256": self.sha256}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    """The id git gives these bytes as a blob: sha1 of "blob <size>\\0" + data."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


def file_status(spec: ModelSpec, models_dir: Path) -> ModelStatus:
    path = models_dir / spec.file
    if not path.is_file():
        return ModelStatus(spec.name, spec.file, "missing", None)
    digest = sha256_of(path.read_bytes())
    if not spec.sha256:
        return ModelStatus(spec.name, spec.file, "unpinned", digest)
    return ModelStatus(spec.name, spec.file, "ok" if digest in spec.sha256 else "mismatch", digest)


def verify_models(models_dir: Path) -> list[ModelStatus]:
    """The state of every registry model's file in `models_dir`."""
    return [file_status(spec, models_dir) for spec in load_registry().all()]


def derive_dynamic_batch(original: bytes) -> bytes:
    """The same model with a dynamic batch dimension `N`.

    Inputs' and outputs' first dimension becomes `N`, and Reshape targets that hard-code a batch of
    1 copy the batch from their input instead (0). Outputs are bit-identical to the original's.
    """
    model = onnx.load_from_string(original)
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    constants = {node.output[0]: node.attribute[0].t for node in graph.node if node.op_type == "Constant"}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        target = initializers.get(node.input[1]) or constants.get(node.input[1])
        if target is None:
            continue
        shape = numpy_helper.to_array(target)
        if shape.size and shape[0] == 1:
            shape = shape.copy()
            shape[0] = 0
            target.CopyFrom(numpy_helper.from_array(shape, target.name))
    return bytes(model.SerializeToString())


def upstream_url(base_url: str, upstream: Upstream) -> str:
    return f"{base_url.rstrip('/')}/{upstream.repo}/{upstream.commit}/{upstream.path}"


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def pull_model(spec: ModelSpec, models_dir: Path, base_url: str, *, timeout: float = 60.0) -> ModelStatus:
    """Fetch `spec` from its upstream, check it, derive the runtime file if needed and store it."""
    current = file_status(spec, models_dir)
    if current.status == "ok":
        return current
    if spec.upstream is None:
        raise ModelFetchError(
            f"{spec.name}: no upstream source is recorded; place your own {spec.file} in {models_dir} "
            "(or set FACECLUSTER_EMBEDDER_PATH)"
        )
    url = upstream_url(base_url, spec.upstream)
    try:
        data = _download(url, timeout)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ModelFetchError(
            f"{spec.name}: cannot download {url} ({exc}). Offline? Fetch {spec.upstream.path} from "
            f"github.com/{spec.upstream.repo} at commit {spec.upstream.commit} by hand, then place "
            f"{spec.file} in {models_dir} (run `facecluster models verify` to check it)"
        ) from None
    _check_upstream(spec, spec.upstream, data)
    runtime = derive_dynamic_batch(data) if spec.derive == "dynamic-batch" else data
    digest = sha256_of(runtime)
    if spec.sha256 and digest not in spec.sha256:
        raise ModelFetchError(
            f"{spec.name}: the derived {spec.file} has sha256 {digest}, not a recorded build "
            f"({', '.join(spec.sha256)}); not stored"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=models_dir, prefix=f".{spec.file}.", delete=False) as tmp:
        tmp.write(runtime)
    os.replace(tmp.name, models_dir / spec.file)
    log.info("pulled %s into %s", spec.name, models_dir / spec.file)
    return ModelStatus(spec.name, spec.file, "ok" if spec.sha256 else "unpinned", digest)


def _check_upstream(spec: ModelSpec, upstream: Upstream, data: bytes) -> None:
    if upstream.sha256 is not None and sha256_of(data) != upstream.sha256:
        raise ModelFetchError(f"{spec.name}: download has sha256 {sha256_of(data)}, expected {upstream.sha256}")
    if upstream.git_blob is not None and git_blob_id(data) != upstream.git_blob:
        raise ModelFetchError(f"{spec.name}: download has git blob {git_blob_id(data)}, expected {upstream.git_blob}")
    if upstream.sha256 is None and upstream.git_blob is None:
        raise ModelFetchError(f"{spec.name}: the registry records no hash for the upstream file")
