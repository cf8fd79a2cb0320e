"""Whether the configured stores answer: `facecluster config check` asks each one and names what fails."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from facecluster.settings import Settings
from facecluster.store.mongo import mongo_hosts


class Check(TypedDict):
    """One backend: what was asked (never with credentials), whether it answered, and why not."""

    ok: bool
    target: str
    error: NotRequired[str]


def failed(target: str, exc: BaseException) -> Check:
    """A check that failed, with the error's type and the start of its message."""
    return {"ok": False, "target": target, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def check_mongo(settings: Settings, timeout_s: float = 5.0) -> Check:
    """Ping the configured MongoDB; the embedded server is started on demand, so it needs no answer now."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    if settings.stores.mongo_uri is None:
        return {"ok": True, "target": f"embedded ({settings.general.data_dir / 'mongo'}), started on demand"}
    uri = settings.stores.mongo_uri.get_secret_value()
    target = f"MongoDB at {mongo_hosts(uri)}"
    timeout_ms = int(timeout_s * 1000)
    try:
        client: MongoClient[dict[str, Any]]
        with MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms) as client:
            client[settings.stores.mongo_db].command("ping")
    except (PyMongoError, ValueError) as exc:
        return failed(target, exc)
    return {"ok": True, "target": target}


def check_qdrant(settings: Settings, timeout_s: float = 5.0) -> Check:
    """List the configured Qdrant server's collections (which needs its API key when it has one)."""
    from qdrant_client import QdrantClient

    url = settings.stores.qdrant_url
    if url is None:
        return {"ok": True, "target": f"embedded ({settings.general.data_dir / 'qdrant'})"}
    key = settings.stores.qdrant_api_key.get_secret_value() if settings.stores.qdrant_api_key else None
    target = f"Qdrant at {url}"
    try:
        QdrantClient(url=url, api_key=key, timeout=int(timeout_s), check_compatibility=False).get_collections()
    except Exception as exc:  # connection, HTTP and authentication errors alike: the check says which
        return failed(target, exc)
    return {"ok": True, "target": target}
