"""Profiles of known users: /detect-face, /update-face and the debug routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from facecluster.api import schemas
from facecluster.api.audit import audits_itself, note_target
from facecluster.api.services import Actor, Deps, Services, UserId
from facecluster.api.uploads import analyze_upload
from facecluster.engine.analysis import ProfileRejected, profile_face
from facecluster.engine.quality import ProfileChecks
from facecluster.people.erasure import erase
from facecluster.people.profiles import USER_ID_PATTERN, ProfileExists, ProfileNotFound, public

router = APIRouter(tags=["profiles"])
MinFaceSize = Annotated[int | None, Form(ge=0, le=10_000, description="pixels; default from the settings")]
MinConfidence = Annotated[float | None, Form(ge=0.0, le=1.0)]
BlurThreshold = Annotated[float | None, Form(ge=0.0, le=100_000.0)]


def _checks(services: Services, size: int | None, confidence: float | None, blur: float | None) -> ProfileChecks:
    s = services.settings
    return ProfileChecks(
        min_face_size=s.profiles.profile_min_face_size if size is None else size,
        min_confidence=s.profiles.profile_min_confidence if confidence is None else confidence,
        blur_threshold=s.profiles.profile_blur_threshold if blur is None else blur,
    )


def _exists(user_id: str) -> HTTPException:
    return HTTPException(409, f"user {user_id} has a profile: use PUT /update-face/{user_id}")


def _missing(user_id: str) -> HTTPException:
    return HTTPException(404, f"user {user_id} has no profile: create it with POST /detect-face")


async def _enrol(
    services: Services, user_id: str, file: UploadFile, checks: ProfileChecks, *, create: bool, replace: bool = False
) -> dict[str, Any]:
    exists = await run_in_threadpool(services.profiles.exists, user_id)  # answered before any model work
    if create and exists:
        raise _exists(user_id)
    if not create and not exists:
        raise _missing(user_id)
    data, analysis = await analyze_upload(services, file)
    try:
        face = profile_face(analysis, checks, services.detector_threshold)
    except ProfileRejected as exc:
        raise HTTPException(422, {"message": str(exc), **exc.details}) from None
    try:
        doc = await run_in_threadpool(
            lambda: services.profiles.enrol(user_id, face, data, create=create, replace=replace)
        )
    except ProfileExists:  # created meanwhile by another request
        raise _exists(user_id) from None
    except ProfileNotFound:  # deleted meanwhile
        raise _missing(user_id) from None
    return {
        "user_id": user_id,
        "has_face": True,
        "face": face.public(),
        "faces": len(doc["faces"]),
        "model_version": doc["model_version"],
    }


@router.post(
    "/detect-face",
    status_code=201,
    summary="Create a user's profile from a photo with one good face",
    response_model=schemas.Enrolled,
)
async def detect_face(
    services: Deps,
    request: Request,
    user_id: Annotated[str, Form(pattern=f"^{USER_ID_PATTERN.pattern}$")],
    file: Annotated[UploadFile, File(description="a photo showing exactly one face")],
    min_face_size: MinFaceSize = None,
    min_confidence: MinConfidence = None,
    blur_threshold: BlurThreshold = None,
) -> dict[str, Any]:
    note_target(request, f"user_id={user_id}")
    checks = _checks(services, min_face_size, min_confidence, blur_threshold)
    return await _enrol(services, user_id, file, checks, create=True)


@router.put(
    "/update-face/{user_id}",
    summary="Add an enrolment face to a profile (or replace them)",
    response_model=schemas.Enrolled,
)
async def update_face(
    services: Deps,
    user_id: UserId,
    file: Annotated[UploadFile, File()],
    min_face_size: MinFaceSize = None,
    min_confidence: MinConfidence = None,
    blur_threshold: BlurThreshold = None,
    replace: Annotated[bool, Form(description="drop the earlier enrolment faces")] = False,
) -> dict[str, Any]:
    checks = _checks(services, min_face_size, min_confidence, blur_threshold)
    return await _enrol(services, user_id, file, checks, create=False, replace=replace)


@router.get(
    "/debug-quality-settings", summary="The profile quality thresholds in force", response_model=schemas.QualitySettings
)
def quality_settings(services: Deps) -> dict[str, Any]:
    s = services.settings
    return {
        "min_face_size": s.profiles.profile_min_face_size,
        "min_confidence": s.profiles.profile_min_confidence,
        "blur_threshold": s.profiles.profile_blur_threshold,
        "detector": s.models.detector,
        "detector_threshold": services.detector_threshold,
        "embedder": services.stores.version,
        "quality_weights": {
            "confidence": s.profiles.quality_weight_confidence,
            "size": s.profiles.quality_weight_size,
            "blur": s.profiles.quality_weight_blur,
            "pose": s.profiles.quality_weight_pose,
        },
    }


@router.get("/debug-profiles", summary="Stored profiles, without vectors", response_model=schemas.ProfilePage)
def list_profiles(
    services: Deps,
    skip: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    store = services.profiles
    return {"total": store.count(), "profiles": [public(doc) for doc in store.page(skip, limit)]}


@router.get("/debug-profile/{user_id}", summary="One profile, without vectors", response_model=schemas.Profile)
def get_profile(services: Deps, user_id: UserId) -> dict[str, Any]:
    try:
        return public(services.profiles.get(user_id))
    except ProfileNotFound:
        raise HTTPException(404, f"user {user_id} has no profile") from None


@router.delete(
    "/debug-profile/{user_id}", summary="Delete a profile and its assignments", response_model=schemas.ProfileDeleted
)
@audits_itself
def delete_profile(services: Deps, actor: Actor, user_id: UserId) -> dict[str, Any]:
    """The user's erasure: the profile, its template in every vector version, its assignments."""
    if not services.profiles.exists(user_id):
        raise HTTPException(404, f"user {user_id} has no profile")
    erased = erase(services.stores, actor=actor, user_id=user_id)
    return {"user_id": user_id, "deleted": True, "assignments_deleted": erased["mongodb"].get("assignments", 0)}
