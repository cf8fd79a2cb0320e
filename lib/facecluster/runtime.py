"""Ray for this process: the configured cluster (`RAY_ADDRESS`), else a local one."""

from __future__ import annotations

import logging
import os

import ray

from facecluster.settings import Settings

#: The Ray namespace of facecluster's named actors.
NAMESPACE = "facecluster"


def init_ray(settings: Settings) -> None:
    """Attach to `RAY_ADDRESS` when set, else start a local Ray; once per process."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS") or "local"
    level = logging.getLevelNamesMapping().get(settings.general.log_level.upper(), logging.INFO)
    ray.init(address=address, namespace=NAMESPACE, logging_level=level, log_to_driver=True)


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings another process of this deployment needs (a Ray job, a Serve replica), as variables:
    every setting but the secrets, and `<VARIABLE>_FILE` references to files that hold them. Secrets
    themselves never go into a Ray runtime env (the dashboard shows those): nodes have them in their own
    environment, or read them from the referenced files."""
    from facecluster.settings import file_references
    from facecluster.store.embedded import mongo_uri

    env = settings.to_env()
    env["FACECLUSTER_MODELS_DIR"] = str(settings.resolved_models_dir)
    uri = mongo_uri(settings)  # the configured MongoDB, or the embedded server's loopback URI
    if "@" not in uri.split("://", 1)[-1].split("/", 1)[0]:  # no credentials in it: not a secret
        env["FACECLUSTER_MONGO_URI"] = uri
    return {**env, **file_references()}
