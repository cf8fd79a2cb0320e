"""Face embedder: aligned crops in, L2-normalised float32 vectors out, many faces per model run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from facecluster.engine.registry import Alignment, EmbedderSpec, Normalization
from facecluster.errors import InvalidInput

_IMAGENET_MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_IMAGENET_STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


class ModelContractError(InvalidInput):
    """The ONNX file does not have the signature its registry entry promises."""


@dataclass(frozen=True, slots=True)
class EmbedderContract:
    """What the ONNX signature says: layout, crop size and vector dimension."""

    input_name: str
    layout: Literal["NCHW", "NHWC"]
    size: int
    dim: int


def read_contract(session: ort.InferenceSession, spec: EmbedderSpec) -> EmbedderContract:
    """Layout and size from the input's shape, the dimension from the output's (or a probe run)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelContractError(f"an embedder takes one input; this model takes {len(inputs)}")
    shape = list(inputs[0].shape)
    if len(shape) != 4:
        raise ModelContractError(f"the input must be 4-d (N,C,H,W or N,H,W,C); it is {shape}")
    if shape[1] == 3:
        layout: Literal["NCHW", "NHWC"] = "NCHW"
        spatial = shape[2:4]
    elif shape[3] == 3:
        layout = "NHWC"
        spatial = shape[1:3]
    else:
        raise ModelContractError(f"no 3-channel axis in input shape {shape}")
    size = spatial[0] if isinstance(spatial[0], int) and spatial[0] > 0 else spec.input_size
    if isinstance(spatial[1], int) and spatial[1] > 0 and spatial[1] != size:
        raise ModelContractError(f"the input must be square; it is {spatial}")
    dim = outputs[0].shape[-1] if outputs else None
    if not isinstance(dim, int) or dim <= 0:
        probe = np.zeros((1, 3, size, size) if layout == "NCHW" else (1, size, size, 3), np.float32)
        dim = int(session.run(None, {inputs[0].name: probe})[0].shape[-1])
    return EmbedderContract(inputs[0].name, layout, int(size), int(dim))


def normalize_crops(crops: NDArray[np.uint8], normalization: Normalization) -> NDArray[np.float32]:
    """uint8 RGB crops (N, S, S, 3) to float32 model input values, still NHWC."""
    pixels: NDArray[np.float32] = crops.astype(np.float32)
    if normalization == "imagenet":
        return np.asarray((pixels - _IMAGENET_MEAN) / _IMAGENET_STD, dtype=np.float32)
    # FaceNet prewhitening: per image, zero mean and unit deviation (floored at 1/sqrt(n)).
    flat = pixels.reshape(len(pixels), -1)
    mean = flat.mean(axis=1)
    std = np.maximum(flat.std(axis=1), 1.0 / np.sqrt(flat.shape[1]))
    return np.asarray((pixels - mean[:, None, None, None]) / std[:, None, None, None], dtype=np.float32)


def l2_normalize(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows scaled to unit length (zero rows stay zero)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


class FaceEmbedder:
    """An embedding model and the crops it wants."""

    def __init__(self, spec: EmbedderSpec, session: ort.InferenceSession) -> None:
        self.spec = spec
        self.session = session
        self.contract = read_contract(session, spec)

    @property
    def dim(self) -> int:
        return self.contract.dim

    @property
    def size(self) -> int:
        return self.contract.size

    @property
    def alignment(self) -> Alignment:
        return self.spec.alignment

    def embed(self, crops: NDArray[np.uint8], *, batch_size: int = 64) -> NDArray[np.float32]:
        """L2-normalised vectors (N, dim) of aligned RGB crops (N, size, size, 3)."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be (N, {self.size}, {self.size}, 3); got {crops.shape}")
        parts = []
        for start in range(0, len(crops), batch_size):
            batch = normalize_crops(crops[start : start + batch_size], self.spec.normalization)
            if self.contract.layout == "NCHW":
                batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
            parts.append(self.session.run(None, {self.contract.input_name: batch})[0])
        return l2_normalize(np.concatenate(parts))
