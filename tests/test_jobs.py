"""The job registry: what the API queues is exactly what the job runs, and bad options are clear errors."""

from __future__ import annotations

import pytest

from facecluster.errors import InvalidInput
from facecluster.jobs import KINDS, AssignJob, ClusterJob, ClusterOptions, PipelineJob, TrainOptions, parse_options

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("cluster-dual", ClusterJob(library="a/b", cluster=ClusterOptions(method="dual", person_threshold=0.6))),
        ("cluster-incremental", ClusterJob(library="a/b", cluster=ClusterOptions(method="graph", incremental=True))),
        ("train", TrainOptions(epochs=3, margin=0.3, library="a/b")),
        ("assign-batch", AssignJob(libraries=["a/b", "c/d"], strategy="vote", overwrite=True)),
        ("cluster-bucket-persons", PipelineJob(source="s3://a/b/", library="a/b", force=True)),
    ],
)
def test_options_cross_the_command_line_unchanged(kind: str, options: object) -> None:
    assert isinstance(options, KINDS[kind].options)
    assert parse_options(kind, options.model_dump_json()) == options  # type: ignore[attr-defined]


def test_every_kind_is_registered_with_its_options_and_function() -> None:
    assert set(KINDS) == {"cluster-dual", "cluster-incremental", "train", "assign-batch", "cluster-bucket-persons"}
    for kind in KINDS.values():
        assert callable(kind.run) and kind.what


def test_unknown_kinds_and_bad_options_are_clear_errors() -> None:
    with pytest.raises(InvalidInput, match="unknown job kind 'nope'; known: assign-batch"):
        parse_options("nope", "{}")
    with pytest.raises(InvalidInput, match="bad options"):
        parse_options("train", '{"epochs": 0}')
    with pytest.raises(InvalidInput, match="bad options"):
        parse_options("cluster-dual", '{"library": "a/b", "flag": true}')  # unknown fields are refused
