"""How the API reaches the face engine: in-process (tests, `queue: false` tools) or a Serve deployment."""

from __future__ import annotations

import asyncio
from typing import Protocol

from facecluster.engine.analysis import ImageAnalysis, analyze_uploads
from facecluster.engine.faces import FaceEngine


class EngineClient(Protocol):
    async def analyze(self, data: bytes) -> ImageAnalysis: ...


class LocalEngine:
    """The engine in this process; one call at a time (the ONNX sessions use every core)."""

    def __init__(self, engine: FaceEngine) -> None:
        self.engine = engine
        self.lock = asyncio.Lock()

    async def analyze(self, data: bytes) -> ImageAnalysis:
        async with self.lock:
            return (await asyncio.to_thread(analyze_uploads, self.engine, [data]))[0]
