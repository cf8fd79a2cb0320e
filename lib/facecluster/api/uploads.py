"""Uploaded photos: size-capped reading and analysis errors as 4xx answers."""

from __future__ import annotations

from fastapi import HTTPException, UploadFile

from facecluster.api.services import Services
from facecluster.engine.analysis import ImageAnalysis


async def read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the upload is larger than the limit of {limit} bytes")
    if not data:
        raise HTTPException(422, "the uploaded file is empty")
    return data


async def analyze_upload(services: Services, file: UploadFile) -> tuple[bytes, ImageAnalysis]:
    """The upload's bytes and every face in it; a file that is not a usable photo is a 422 that says why."""
    data = await read_upload(file, services.settings.serve.max_upload_bytes)
    analysis = await services.engine.analyze(data)
    if analysis.error_code is not None:
        raise HTTPException(422, {"error": analysis.error_code, "message": f"not a usable photo: {analysis.error}"})
    return data, analysis
