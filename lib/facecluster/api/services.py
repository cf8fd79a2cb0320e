"""What every route needs, built once per API replica, and the request-level dependencies."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request

from facecluster.api.engineclient import EngineClient
from facecluster.api.jobs import JobRunner
from facecluster.engine.faces import min_confidence
from facecluster.engine.registry import load_registry
from facecluster.ingest.maintenance import face_record
from facecluster.ingest.sources import validate_library
from facecluster.people.profiles import USER_ID_PATTERN, ProfileStore
from facecluster.settings import Settings
from facecluster.store.connection import Connection, current
from facecluster.store.meta import MetaStore

#: One part of a library name: its bucket or its sub-bucket.
PART = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$"
CLUSTER_ID = r"^clu_[0-9a-f]{12}$"
PERSON_ID = r"^per_[0-9a-f]{12}$"
RUN_ID = r"^run_[0-9a-f]{12}$"
AUDIT_ID = r"^aud_[0-9a-f]{12}$"
FACE_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JOB_ID = r"^[A-Za-z0-9_\-]{1,64}$"
#: How often the API looks for a switch of the active vector version (one small MongoDB read).
VERSION_CHECK_S = 1.0


@dataclass
class Services:
    settings: Settings
    connection: Connection
    engine: EngineClient
    jobs: JobRunner
    checked_at: float = 0.0

    @property
    def stores(self) -> Connection:
        """The stores at the active vector version: a training job may switch it while the API runs."""
        if time.monotonic() - self.checked_at >= VERSION_CHECK_S:
            self.connection = current(self.connection)
            self.checked_at = time.monotonic()
        return self.connection

    @property
    def meta(self) -> MetaStore:
        return self.stores.meta

    @property
    def detector_threshold(self) -> float:
        """Detections below this are not faces (the settings, else the detector's calibrated value)."""
        return min_confidence(self.settings, load_registry().detector(self.settings.models.detector))

    @property
    def profiles(self) -> ProfileStore:
        return ProfileStore(self.stores.meta, self.stores.profiles, self.stores.space)


_process_services: list[Services] = []


def set_process_services(services: Services) -> None:
    """The services of this process's API (Serve copies the app into its replica, so state can't carry them)."""
    _process_services[:] = [services]


def current_services(app: Any) -> Services | None:
    """The services of the app (tests attach them) or of this process (the Serve ingress)."""
    services: Services | None = getattr(app.state, "services", None) if app is not None else None
    return services if services is not None or not _process_services else _process_services[0]


def get_services(request: Request) -> Services:
    services = current_services(request.app)
    if services is None:
        raise HTTPException(503, "the service is starting")
    return services


Deps = Annotated[Services, Depends(get_services)]
Bucket = Annotated[str, Path(pattern=PART, description="bucket name (first part of the library)")]
Sub = Annotated[str, Path(pattern=PART, description="sub-bucket (second part of the library)")]
UserId = Annotated[str, Path(pattern=f"^{USER_ID_PATTERN.pattern}$")]
ClusterId = Annotated[str, Path(pattern=CLUSTER_ID)]
PersonId = Annotated[str, Path(pattern=PERSON_ID)]
FaceId = Annotated[str, Path(pattern=FACE_ID)]


def library_of(bucket: str, sub: str) -> str:
    return validate_library(f"{bucket}/{sub}")


def actor(request: Request) -> str:
    """Who makes a change: the API key's name (with the X-Actor header as whom it acts for), else the
    X-Actor header when keys are off, else `anonymous`."""
    named = request.headers.get("x-actor", "").strip()
    on_behalf = named if named and re.fullmatch(r"[\w.@+\- ]{1,64}", named) else None
    key: str | None = getattr(request.state, "key_name", None)
    if key is None:
        return on_behalf or "anonymous"
    return f"{key} for {on_behalf}" if on_behalf and on_behalf != key else key


Actor = Annotated[str, Depends(actor)]


def with_id(name: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as the API shows it: its `_id` under the name clients know it by."""
    return {name: doc["_id"], **{key: value for key, value in doc.items() if key != "_id"}}


def face_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored face as the API shows it: the export record and who labelled it."""
    return {**face_record(doc), "label_source": doc.get("label_source")}
