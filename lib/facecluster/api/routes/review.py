"""The review page (`/ui`) and what it reads besides the faces routes: face thumbnails, libraries,
a person's faces and a library's statistics with the similarity of each face to its centroid."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from facecluster.api import schemas
from facecluster.api.routes.faces import LibraryQuery, Page, PageSize, owning_library, page_window, resolve_library
from facecluster.api.services import Deps, FaceId, PersonId, Services, face_view
from facecluster.engine.decode import ImageDecodeError, decode_photo
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


#: The thumbnail sizes served, in pixels (others are refused, so a client cannot make every request a decode).
THUMBNAIL_SIZES = (64, 128, 256)


class ThumbnailCache:
    """JPEG thumbnails most recently served, at most `budget` bytes in all; the least recent leave first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.entries: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self.lock:
            data = self.entries.get(key)
            if data is not None:
                self.entries.move_to_end(key)
            return data

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        with self.lock:
            if key in self.entries or len(data) > self.budget:
                return
            self.entries[key] = data
            self.size += len(data)
            while self.size > self.budget:
                self.size -= len(self.entries.popitem(last=False)[1])

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


_caches: dict[int, ThumbnailCache] = {}


def _cache(budget: int) -> ThumbnailCache:
    return _caches.setdefault(budget, ThumbnailCache(budget))


@router.get(
    "/api/v1/faces/faces/{face_id}/thumbnail",
    tags=["faces"],
    summary="A face's thumbnail (JPEG, 64, 128 or 256 pixels); a face id never changes its crop, so it is cached",
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def thumbnail(
    services: Deps,
    face_id: FaceId,
    size: Annotated[int, Query(description="64, 128 or 256", json_schema_extra={"enum": list(THUMBNAIL_SIZES)})] = 128,
) -> Response:
    if size not in THUMBNAIL_SIZES:
        raise HTTPException(422, f"thumbnails come in {', '.join(map(str, THUMBNAIL_SIZES))} pixels, not {size}")
    data = await run_in_threadpool(_thumbnail, services, face_id, size)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=31536000, immutable"})


def _thumbnail(services: Services, face_id: str, size: int) -> bytes:
    meta = services.meta
    face = meta.face(face_id)
    if face is None:
        raise HTTPException(404, f"face {face_id} not found")
    image = meta.images_by_key(face["library"], [face["image"]]).get(face["image"])
    if image is None:
        raise HTTPException(404, f"the photo {face['image']} of library {face['library']} is not recorded")
    settings = services.settings
    cache = _cache(settings.serve.thumbnail_cache_bytes)
    key = (face_id, image["uri"], tuple(face["bbox"]), size)  # the face id changes when the photo does
    cached = cache.get(key)
    if cached is not None:
        return cached
    try:
        pixels = decode_photo(read_uri(image["uri"], S3Options.from_settings(settings)), settings.images)
    except (OSError, SourceError, ImageDecodeError) as exc:
        raise HTTPException(404, f"the photo {face['image']} cannot be read now: {exc}") from exc
    thumb = face_thumbnail(pixels.pixels, tuple(face["bbox"]), size)
    cache.put(key, thumb)
    return thumb


def forget_thumbnails() -> None:
    """Drop every cached thumbnail (after an erasure or a deletion)."""
    for cache in _caches.values():
        cache.clear()


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
    skip, limit = page_window(page, page_size)
    faces = meta.faces_in(library, person_id=person_id, best_first=True, skip=skip, limit=limit)
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
