"""Your data: erasure of a face, a photo, a person or a user, and deletion of a whole library."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator

from facecluster.api import schemas
from facecluster.api.audit import audits_itself
from facecluster.api.routes.review import forget_thumbnails
from facecluster.api.services import FACE_ID, PERSON_ID, Actor, Deps
from facecluster.ingest.sources import validate_library
from facecluster.people.erasure import delete_library, erase
from facecluster.people.profiles import USER_ID_PATTERN

router = APIRouter(prefix="/api/v1", tags=["your data"])


class ErasureRequest(BaseModel):
    """Exactly one of: a face, a photo (its key with its library), a person, a user."""

    face_id: str | None = Field(default=None, pattern=FACE_ID)
    image: str | None = Field(default=None, min_length=1, max_length=2048, description="the photo's key")
    library: str | None = Field(default=None, description="the photo's library (with `image`)")
    person_id: str | None = Field(default=None, pattern=PERSON_ID)
    user_id: str | None = Field(default=None, pattern=f"^{USER_ID_PATTERN.pattern}$")

    @model_validator(mode="after")
    def _exactly_one(self) -> ErasureRequest:
        given = [self.face_id, self.image, self.person_id, self.user_id]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of face_id, image (with library), person_id, user_id")
        if (self.image is None) != (self.library is None):
            raise ValueError("image and library go together")
        return self


@router.post(
    "/erasure", summary="Erase biometric data from every store; it stays erased", response_model=schemas.Erased
)
@audits_itself
async def erasure(services: Deps, actor: Actor, body: ErasureRequest) -> dict[str, Any]:
    library = None if body.library is None else validate_library(body.library)
    result = await run_in_threadpool(
        erase,
        services.stores,
        actor=actor,
        face_id=body.face_id,
        library=library,
        image=body.image,
        person_id=body.person_id,
        user_id=body.user_id,
    )
    forget_thumbnails()
    return result


@router.delete(
    "/libraries/{library:path}",
    summary="Delete a whole library: photos, faces, vectors of every version, persons, clusters, runs",
    response_model=schemas.LibraryDeleted,
)
@audits_itself
async def remove_library(
    services: Deps, actor: Actor, library: Annotated[str, Path(min_length=1, max_length=512)]
) -> dict[str, Any]:
    result = await run_in_threadpool(delete_library, services.stores, validate_library(library), actor=actor)
    forget_thumbnails()
    return result
