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
