"""The API on Ray Serve: a face-engine deployment that batches uploads with `@serve.batch`, and the
FastAPI ingress that owns the store connections and submits Ray jobs."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from facecluster.api import create_app
from facecluster.api.jobs import JobRunner
from facecluster.api.services import Services, set_process_services
from facecluster.deployment import worker_env
from facecluster.engine.analysis import ImageAnalysis, analyze_uploads
from facecluster.engine.faces import FaceEngine
from facecluster.settings import Settings, get_settings
from facecluster.store.connection import connect

log = logging.getLogger(__name__)
settings = get_settings()
app = create_app(settings)


@serve.deployment(ray_actor_options={"num_cpus": 1})
class FaceEngineDeployment:
    """Detect, assess and embed uploads; concurrent requests share model batches."""

    def __init__(self, batch_size: int, wait_s: float) -> None:
        # The replica shares its machine with the HTTP proxy and the ingress: ONNX threads sleep, not spin.
        self.engine = FaceEngine.from_settings(get_settings().updated(ort_spinning=False))
        self.analyze_batch.set_max_batch_size(batch_size)  # type: ignore[attr-defined]
        self.analyze_batch.set_batch_wait_timeout_s(wait_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02, max_concurrent_batches=2)
    async def analyze_batch(self, blobs: list[bytes]) -> list[ImageAnalysis]:
        return await asyncio.to_thread(analyze_uploads, self.engine, blobs)

    async def analyze(self, data: bytes) -> ImageAnalysis:
        return await self.analyze_batch(data)


class ServeEngine:
    """`EngineClient` over the engine deployment's handle."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self.handle = handle

    async def analyze(self, data: bytes) -> ImageAnalysis:
        result: ImageAnalysis = await self.handle.analyze.remote(data)
        return result


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(app)
class Api:
    def __init__(self, engine: DeploymentHandle[Any]) -> None:
        current = get_settings()
        check_bind(current, bound_host())  # `serve run serve/config.yaml` binds where its http_options say
        set_process_services(Services(current, connect(current), ServeEngine(engine), JobRunner(current)))


def build(current: Settings | None = None, *, forward_env: bool = False) -> Any:
    """The application: the ingress bound to the engine deployment, sized from the settings.
    `forward_env` gives the replicas this process's settings (secrets only by file reference)."""
    current = current or get_settings()
    batch = current.serve.engine_batch_size
    runtime_env = {"env_vars": worker_env(current)} if forward_env else {}
    engine = FaceEngineDeployment.options(  # type: ignore[attr-defined]
        num_replicas=current.serve.engine_replicas,
        max_ongoing_requests=max(4 * batch, 32),
        ray_actor_options={"num_cpus": 1, "runtime_env": runtime_env},
    ).bind(batch, current.serve.engine_batch_wait_s)
    options = {"num_cpus": 0.25, "runtime_env": runtime_env}
    return Api.options(ray_actor_options=options).bind(engine)  # type: ignore[attr-defined]


#: What `serve run serve/config.yaml` imports.
application = build()


def check_bind(current: Settings, host: str) -> None:
    """Refuse a non-loopback address without API keys, unless explicitly allowed."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not current.serve.api_keys and not current.serve.allow_open_bind:
        raise PermissionError(
            f"refusing to serve on {host} without API keys: set FACECLUSTER_API_KEYS, "
            "or FACECLUSTER_ALLOW_OPEN_BIND=true to serve an open API"
        )


def bound_host() -> str:
    """The host Serve's HTTP proxies listen on, as its controller has it."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None  # it raises when no controller runs
    return str(client.http_config.host)


def run(current: Settings, host: str, port: int, *, blocking: bool = True) -> None:
    """Start Serve on `host:port` with the application (`facecluster serve`)."""
    from facecluster.deployment import init_ray
    from facecluster.engine.faces import require_models

    check_bind(current, host)
    require_models(current)
    init_ray(current)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(current, forward_env=True), name="facecluster", route_prefix="/", blocking=blocking)
