"""The model registry: `models/registry.toml`, typed."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DetectorFamily = Literal["yolov5-face", "yolov8-face", "yunet"]
Normalization = Literal["imagenet", "prewhiten"]
Alignment = Literal["arcface", "facenet"]


class Upstream(BaseModel):
    """Where the original file lives: `<base>/<repo>/<commit>/<path>`."""

    model_config = ConfigDict(frozen=True)

    repo: str
    commit: str
    path: str
    sha256: str | None = None
    git_blob: str | None = None


class ModelSpec(BaseModel):
    """What every registry entry records."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    file: str
    sha256: list[str] = Field(default_factory=list, description="accepted builds of `file`")
    derive: Literal["dynamic-batch"] | None = None
    licence: str
    input: str
    outputs: str
    input_size: int
    upstream: Upstream | None = None


class DetectorSpec(ModelSpec):
    family: DetectorFamily
    pad_value: int = 0
    score_threshold: float = Field(ge=0.0, le=1.0)
    score_floor: float = Field(ge=0.0, le=1.0)
    nms_iou: float = Field(gt=0.0, le=1.0)


class EmbedderSpec(ModelSpec):
    normalization: Normalization
    alignment: Alignment
    verify_threshold: float
    person_match_threshold: float
    unknown_method: Literal["graph", "hdbscan", "dbscan", "agglomerative"]
    cluster_thresholds: dict[Literal["graph", "hdbscan", "dbscan", "agglomerative"], float]
    cluster_merge_threshold: float = Field(description="cosine: graph clusters whose centroids merge")


class Registry(BaseModel):
    detectors: dict[str, DetectorSpec]
    embedders: dict[str, EmbedderSpec]

    def detector(self, name: str) -> DetectorSpec:
        try:
            return self.detectors[name]
        except KeyError:
            raise KeyError(f"unknown detector {name!r}; known: {', '.join(self.detectors)}") from None

    def embedder(self, name: str) -> EmbedderSpec:
        try:
            return self.embedders[name]
        except KeyError:
            raise KeyError(f"unknown embedder {name!r}; known: {', '.join(self.embedders)}") from None

    def all(self) -> list[ModelSpec]:
        return [*self.detectors.values(), *self.embedders.values()]


@lru_cache(maxsize=1)
def load_registry() -> Registry:
    """Read the registry shipped with the package (a link to `models/registry.toml`)."""
    raw = tomllib.loads(resources.files("facecluster.engine").joinpath("registry.toml").read_text("utf-8"))
    return Registry(
        detectors={name: DetectorSpec(name=name, **entry) for name, entry in raw["detectors"].items()},
        embedders={name: EmbedderSpec(name=name, **entry) for name, entry in raw["embedders"].items()},
    )
