"""How a process joins the deployment: the configured Ray cluster (`RAY_ADDRESS`), else the data
directory's embedded head with the services every job on it uses; the settings other processes of the
deployment need; and stopping the embedded default (`facecluster stop`). Ray's own head management is in
`runtime`, the embedded stores in `store/`; neither imports this module."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ray

from facecluster.names import RAY_NAMESPACE
from facecluster.runtime import (
    ensure_head,
    env_digest,
    head_auth,
    head_folder,
    running_head,
    stop_head,
)
from facecluster.settings import Settings, file_references

log = logging.getLogger(__name__)


def init_ray(settings: Settings) -> None:
    """Attach to `RAY_ADDRESS` when set, else to the data directory's Ray head (started when none runs, with
    its services); once per process. On the embedded head this process's settings reach its workers in
    the head's environment when they are the ones it started with, else as the job's runtime env."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    level = logging.getLevelNamesMapping().get(settings.general.log_level.upper(), logging.INFO)
    configured = os.environ.get("RAY_ADDRESS")
    if configured:
        ray.init(address=configured, namespace=RAY_NAMESPACE, logging_level=level, log_to_driver=True)
        return
    env = worker_env(settings, secrets_dir=head_folder(settings.general.data_dir) / "secrets")
    head, started = ensure_head(settings, env)
    os.environ.update(head_auth(settings.general.data_dir))
    ray._raylet.Config.initialize("")  # type: ignore[attr-defined]  # Ray read its auth mode at import
    # The head's workers inherit the environment it was started with: with the same settings a runtime env
    # would change nothing in them, and it adds a second to the start of every actor.
    same = head.worker_env_digest == env_digest(env)
    runtime_env = None if same else {"env_vars": env}
    ray.init(
        address=head.gcs, namespace=RAY_NAMESPACE, logging_level=level, log_to_driver=True, runtime_env=runtime_env
    )
    if started:
        start_head_services(settings)


def start_head_services(settings: Settings) -> None:
    """Start, with the embedded head, the actors every ingest on it uses: Ray Data's statistics, autoscaling
    and actor-location actors (detached: the first Ray Data job would start them and they stay) and the
    owner of the embedded Qdrant Edge shards. Each is a process that imports Ray Data or Qdrant Edge, seconds
    of CPU apiece, which would otherwise compete with the first job's model actors while they start."""
    from facecluster.ingest.ray_internals import start_data_actors
    from facecluster.store.embedded import local_vectors_path
    from facecluster.store.owner import local_vectors_owner

    actors = start_data_actors()
    path = local_vectors_path(settings)
    if path is not None:
        actors.append(local_vectors_owner(path))
    ray.get([actor.__ray_ready__.remote() for actor in actors])


def worker_env(settings: Settings, *, secrets_dir: Path | None = None) -> dict[str, str]:
    """The settings another process of this deployment needs (a Ray job, a Serve replica), as variables:
    every setting but the secrets, and `<VARIABLE>_FILE` references to files that hold them. Secrets
    themselves never go into a Ray runtime env (the dashboard shows those): nodes have them in their own
    environment, or read them from the referenced files. With `secrets_dir` (the embedded head, on this
    machine), secrets set as plain variables are written there, readable by this user only, and referenced."""
    from facecluster.store.embedded import mongo_uri

    env = settings.to_env()
    env["FACECLUSTER_MODELS_DIR"] = str(settings.resolved_models_dir)
    uri = mongo_uri(settings)  # the configured MongoDB, or the embedded server's loopback URI
    if "@" not in uri.split("://", 1)[-1].split("/", 1)[0]:  # no credentials in it: not a secret
        env["FACECLUSTER_MONGO_URI"] = uri
    references = file_references()
    if secrets_dir is not None:
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for variable, value in settings.secrets().items():
            if f"{variable}_FILE" in references or variable in env:  # referenced, or a URI without credentials
                continue
            path = secrets_dir / variable.lower()
            path.touch(mode=0o600)
            path.write_text(value)
            references[f"{variable}_FILE"] = str(path)
    return {**env, **references}


def stop_embedded(data_dir: Path, *, grace_s: float = 3.0) -> dict[str, bool]:
    """Stop the data directory's Ray head and MongoDB-wire server (`facecluster stop`); this process
    leaves that Ray first when it is attached to it. Which of the two were running."""
    from facecluster.store.embedded import stop_mongo

    head = running_head(data_dir)
    if head is not None and ray.is_initialized():
        attached = str(ray.get_runtime_context().gcs_address).rsplit(":", 1)[-1]
        if attached == head.gcs.rsplit(":", 1)[-1]:
            ray.shutdown()
    return {"ray": stop_head(data_dir, grace_s=grace_s), "mongodb": stop_mongo(data_dir)}


@contextlib.contextmanager
def scratch_data_dir(prefix: str) -> Iterator[Path]:
    """A throw-away data directory (evaluations, benchmarks); its embedded services stop with it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        try:
            yield Path(scratch)
        finally:
            stop_embedded(Path(scratch))
