"""Shared fixtures: the real models and photos in ../shared, and a settings object pointing at them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from facecluster.engine import FaceEngine
from facecluster.imagedecode import decode_image
from facecluster.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACECLUSTER_SHARED", ROOT.parent / "shared"))


def _need(path: Path) -> Path:
    """`path` under ../shared; a missing one fails the test under CI and skips it elsewhere."""
    if not path.exists():
        message = f"{path} is missing: the tests read real models and photos from ../shared"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _need(SHARED / "models")


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return _need(SHARED / "data" / "photos")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _need(SHARED / "data" / "lfw")


@pytest.fixture(scope="session")
def settings(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(models_dir=models_dir, data_dir=tmp_path_factory.mktemp("data"), _env_file=None)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> FaceEngine:
    return FaceEngine.from_settings(settings)


def load(path: Path) -> NDArray[np.uint8]:
    """A photo from disk as RGB pixels."""
    return decode_image(path.read_bytes(), max_bytes=10**9, max_pixels=10**9).pixels
