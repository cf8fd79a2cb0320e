"""`facecluster config check`: connect to every configured backend and say which one fails and why."""

from __future__ import annotations

import os
import socket

from facecluster.errors import FaceclusterError
from facecluster.settings import Settings
from facecluster.store.checks import Check, check_mongo, check_qdrant, failed


def check_ray(settings: Settings, timeout_s: float = 5.0) -> Check:
    """Reach `RAY_ADDRESS` (GCS, Ray Client or dashboard address); the data directory's own Ray otherwise."""
    from facecluster.runtime import head_status

    address = os.environ.get("RAY_ADDRESS")
    if not address:
        status = head_status(settings.general.data_dir)
        where = f"at {status['gcs']}" if status["running"] else "not running, started on demand"
        return {"ok": True, "target": f"embedded Ray of {settings.general.data_dir} ({where})"}
    if address in ("auto", "local"):
        return {"ok": True, "target": f"RAY_ADDRESS={address}"}
    hostport = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    target = f"Ray at {hostport}"
    try:
        with socket.create_connection((host.strip("[]") or hostport, int(port or 6379)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        return failed(target, exc)
    return {"ok": True, "target": target}


def check_models(settings: Settings) -> Check:
    """Load the configured detector and embedder (files present, signatures as their contracts say)."""
    from facecluster.engine.faces import load_detector, load_embedder, model_path

    target = f"models in {settings.resolved_models_dir}"
    try:
        detector, embedder = load_detector(settings), load_embedder(settings)
    except (FaceclusterError, OSError, ValueError, RuntimeError) as exc:
        return failed(target, exc)
    files = ", ".join(str(model_path(settings, model.spec)) for model in (detector, embedder))
    return {"ok": True, "target": files}


def check_s3(settings: Settings, source: str) -> Check:
    """List one key under an `s3://bucket/prefix` source with the configured S3 settings."""
    from facecluster.ingest.sources import S3Options, s3_client, split_s3

    bucket, prefix = split_s3(source)
    target = f"S3 {source}" + (f" at {settings.s3.s3_endpoint_url}" if settings.s3.s3_endpoint_url else "")
    try:
        s3_client(S3Options.from_settings(settings)).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:  # credentials, network and permission errors alike: the check names them
        return failed(target, exc)
    return {"ok": True, "target": target}


def config_check(settings: Settings, source: str | None = None) -> dict[str, object]:
    """Every backend's check, and whether all passed."""
    checks: dict[str, Check] = {
        "mongodb": check_mongo(settings),
        "qdrant": check_qdrant(settings),
        "ray": check_ray(settings),
        "models": check_models(settings),
    }
    if source and source.startswith("s3://"):
        checks["s3"] = check_s3(settings, source)
    return {"ok": all(check["ok"] for check in checks.values()), "checks": checks}
