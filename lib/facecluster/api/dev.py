"""The API without Ray Serve, for development: `make dev` runs it under uvicorn with reload.

The same app and routes as `facecluster serve`, with the face engine in this process."""

from __future__ import annotations

from fastapi import FastAPI

from facecluster.api import create_app
from facecluster.api.engineclient import LocalEngine
from facecluster.api.jobs import JobRunner
from facecluster.api.services import Services
from facecluster.engine.faces import FaceEngine
from facecluster.settings import get_settings
from facecluster.store.connection import connect


def app() -> FastAPI:
    """An app factory (`uvicorn --factory facecluster.api.dev:app`)."""
    settings = get_settings()
    services = Services(
        settings, connect(settings), LocalEngine(FaceEngine.from_settings(settings)), JobRunner(settings)
    )
    return create_app(settings, services)
