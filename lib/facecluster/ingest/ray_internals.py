"""Ray Data's private modules: the one place facecluster imports them. Written for Ray 2.60.0 (pinned in
pyproject.toml); an upgrade of Ray checks this file, and nothing else reaches into `ray.data._internal`."""

from __future__ import annotations

from typing import Any

from ray.data import Dataset


def start_data_actors() -> list[Any]:
    """Ray Data's statistics, autoscaling and actor-location actors, found or started (detached: the first
    Ray Data job would start them and they stay)."""
    from ray.data._internal.cluster_autoscaler import get_or_create_autoscaling_coordinator
    from ray.data._internal.execution.node_trackers import get_or_create_actor_location_tracker
    from ray.data._internal.stats import get_or_create_stats_actor

    return [
        get_or_create_stats_actor(),
        get_or_create_autoscaling_coordinator(),  # type: ignore[no-untyped-call]
        get_or_create_actor_location_tracker(),  # type: ignore[no-untyped-call]
    ]


def materialized_dataset(refs: list[Any], metadata: list[Any]) -> Dataset:
    """A dataset of Arrow blocks already in the object store, with the metadata read when they were put
    there (as `ray.data.from_items` builds one, without the tasks `from_arrow_refs` starts to read it)."""
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import FromArrow
    from ray.data._internal.stats import DatasetStats
    from ray.data.context import DataContext
    from ray.data.dataset import MaterializedDataset

    context = DataContext.get_current().copy()
    stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
    dataset: Dataset = MaterializedDataset(LogicalPlan(FromArrow(refs, metadata), context), context, stats)
    return dataset
