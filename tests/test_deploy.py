"""The KubeRay manifests under deploy/: what they run exists, secrets come only from the Secret, the
dashboard stays on loopback, and the API's open bind is one the API accepts (keys set)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from facecluster.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRET_NAMES = {"MONGO_URI", "QDRANT_API_KEY", "FACECLUSTER_API_KEYS", "AWS_SECRET_ACCESS_KEY"}

pytestmark = pytest.mark.fast


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


def containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def check_cluster(cluster: dict[str, Any]) -> None:
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    for container in containers(cluster):
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"facecluster-settings", "facecluster-secrets"}
        assert not SECRET_NAMES & {env["name"] for env in container.get("env", [])}


def test_rayjob_runs_the_ingest_command_with_secrets_from_the_secret() -> None:
    job = manifest("rayjob-ingest.yaml")
    assert job["kind"] == "RayJob"
    program, *args = job["spec"]["entrypoint"].split()
    assert program == "facecluster"
    parsed = build_parser().parse_args(args)
    assert parsed.command == "ingest" and parsed.source.startswith("s3://")
    assert parsed.library == "my-bucket/events-2024"
    assert "runtimeEnvYAML" not in job["spec"]  # nothing a dashboard would show
    check_cluster(job["spec"]["rayClusterSpec"])


def test_rayservice_serves_the_application_behind_keys() -> None:
    service = manifest("rayservice-api.yaml")
    assert service["kind"] == "RayService"
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    module, _, name = app["import_path"].partition(":")
    assert module == "facecluster.api.serving" and name == "application"
    assert importlib.util.find_spec(module) is not None
    assert {d["name"] for d in app["deployments"]} == {"FaceEngineDeployment", "Api"}
    check_cluster(service["spec"]["rayClusterConfig"])
    # An open bind: the Secret provides FACECLUSTER_API_KEYS, without which the Api replica refuses it.
    assert config["http_options"]["host"] == "0.0.0.0"
    secret = next(yaml.safe_load_all((DEPLOY / "secrets.example.yaml").read_text()))
    assert secret["kind"] == "Secret" and "FACECLUSTER_API_KEYS" in secret["stringData"]
