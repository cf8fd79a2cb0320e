"""The review page (`/ui`) and what it reads besides the faces routes: face thumbnails, libraries,
a person's faces and a library's statistics with the similarity of each face to its centroid."""

from __future__ import annotations

import itertools
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from facecluster.api import schemas
from facecluster.api.routes.faces import LibraryQuery, Page, PageSize, owning_library, resolve_library
from facecluster.api.services import Deps, FaceId, PersonId, Services, face_view
from facecluster.engine.decode import ImageDecodeError, decode_image
from facecluster.engine.projection import unit
from facecluster.engine.thumbnails import face_thumbnail
from facecluster.ingest.sources import S3Options, SourceError, read_uri
from facecluster.people.stats import library_stats

router = APIRouter(tags=["review"])
#: Faces whose centroid similarity the statistics sample at most.
SIMILARITY_SAMPLE = 5000


@router.get("/ui", response_class=HTMLResponse, summary="The review page", include_in_schema=False)
def review_page() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


@lru_cache(maxsize=1)
def _page() -> str:
    return resources.files("facecluster.api").joinpath("ui/index.html").read_text(encoding="utf-8")


@router.get(
    "/api/v1/faces/libraries", tags=["faces"], summary="Libraries with stored photos", response_model=schemas.Libraries
)
def libraries(services: Deps) -> dict[str, Any]:
    return {"libraries": services.meta.libraries()}


@router.get(
    "/api/v1/faces/faces/{face_id}/thumbnail",
    tags=["faces"],
    summary="A face's thumbnail (JPEG); a face id never changes its crop, so it is cached for good",
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def thumbnail(services: Deps, face_id: FaceId, size: Annotated[int, Query(ge=32, le=512)] = 128) -> Response:
    data = await run_in_threadpool(_thumbnail, services, face_id, size)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"})


def _thumbnail(services: Services, face_id: str, size: int) -> bytes:
    meta = services.meta
    face = meta.face(face_id)
    if face is None:
        raise HTTPException(404, f"face {face_id} not found")
    image = meta.images_by_key(face["library"], [face["image"]]).get(face["image"])
    if image is None:
        raise HTTPException(404, f"the photo {face['image']} of library {face['library']} is not recorded")
    settings = services.settings
    limits = (settings.images.max_image_bytes, settings.images.max_image_pixels)
    try:
        return _cached_thumbnail(
            face_id, image["uri"], tuple(face["bbox"]), size, S3Options.from_settings(settings), limits
        )
    except (OSError, SourceError, ImageDecodeError) as exc:
        raise HTTPException(404, f"the photo {face['image']} cannot be read now: {exc}") from exc


def forget_thumbnails() -> None:
    """Drop every cached thumbnail (after an erasure or a deletion)."""
    _cached_thumbnail.cache_clear()


@lru_cache(maxsize=4096)
def _cached_thumbnail(
    face_id: str, uri: str, bbox: tuple[float, ...], size: int, s3: S3Options, limits: tuple[int, int]
) -> bytes:
    """Keyed by the face id too: it changes when the photo behind the URI does (its etag is part of it)."""
    del face_id
    pixels = decode_image(read_uri(uri, s3), max_bytes=limits[0], max_pixels=limits[1]).pixels
    return face_thumbnail(pixels, bbox, size)


@router.get(
    "/api/v1/faces/persons/{person_id}/faces",
    tags=["faces"],
    summary="A person's faces, best quality first",
    response_model=schemas.PersonFaces,
)
def person_faces(services: Deps, person_id: PersonId, page: Page = 1, page_size: PageSize = 100) -> dict[str, Any]:
    library = owning_library(services, "persons", person_id, "person")
    meta = services.meta
    total = meta.count_faces(library, person_id=person_id)
    faces = meta.faces_in(library, person_id=person_id, best_first=True, skip=(page - 1) * page_size, limit=page_size)
    return {"person_id": person_id, "library": library, "total": total, "faces": [face_view(f) for f in faces]}


@router.get(
    "/api/v1/faces/stats",
    tags=["faces"],
    summary="Statistics of a library, with centroid similarities",
    response_model=schemas.LibraryStats,
)
def stats(services: Deps, library: LibraryQuery = None) -> dict[str, Any]:
    """`facecluster stats` plus a histogram of each clustered face's cosine to its cluster's centroid
    (a sample of at most 5,000 faces) and the latest run."""
    name = resolve_library(services, library)
    meta = services.meta
    out = library_stats(meta, name)
    clusters = meta.clusters(name)
    centroids = {c["_id"]: np.asarray(c["centroid"], np.float32) for c in clusters if c.get("centroid")}
    members = meta.clustered_faces(name, sorted(centroids), limit=SIMILARITY_SAMPLE)
    edges = np.round(np.linspace(0.0, 1.0, 21), 2)
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    if members:
        vectors = unit(services.stores.vectors.fetch([m["_id"] for m in members]))
        own = np.stack([centroids[str(m["cluster_id"])] for m in members])
        similarity = np.clip((vectors * unit(own)).sum(axis=1), 0.0, 1.0)
        counts, _ = np.histogram(similarity, bins=edges)
    latest = meta.latest_run(name, by="finished_at")
    out["centroid_similarity"] = {
        "bins": [f"{a:.2f}-{b:.2f}" for a, b in itertools.pairwise(edges)],
        "counts": counts.tolist(),
        "faces": len(members),
    }
    out["latest_run"] = (
        None
        if latest is None
        else {
            "run_id": latest["_id"],
            "method": latest.get("method"),
            "counts": latest.get("counts"),
            "finished_at": latest.get("finished_at"),
        }
    )
    return out
