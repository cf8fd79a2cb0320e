"""Long operations as Ray jobs, through the Job Submission API, so they show in the dashboard."""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any

from facecluster.errors import NotFound
from facecluster.settings import Settings
from facecluster.store.backoff import BackendUnavailable
from facecluster.store.embedded import mongo_uri

log = logging.getLogger(__name__)


class JobNotFound(NotFound):
    def __str__(self) -> str:
        return f"job {self.args[0]} not found"


def options(*pairs: tuple[str, object]) -> list[str]:
    """Command-line options of the values that are set: `(flag, value)` → `flag value`; `True` gives the
    flag alone; `None` and `False` give nothing."""
    out: list[str] = []
    for flag, value in pairs:
        if value is True:
            out.append(flag)
        elif value is not None and value is not False:
            out += [flag, str(value)]
    return out


def job_env(settings: Settings) -> dict[str, str]:
    """The API's settings for a job, so it reaches the same stores and models; secrets stay with the
    nodes' environment (they would show in the dashboard)."""
    env = settings.to_env()
    env["FACECLUSTER_MODELS_DIR"] = str(settings.resolved_models_dir)
    if settings.mongo_uri is None:  # the embedded server: a loopback URI without credentials
        env["FACECLUSTER_MONGO_URI"] = mongo_uri(settings)
    return env


def last_json(logs: str) -> dict[str, Any] | None:
    """The job's result: the last line of its logs that is a JSON object."""
    for line in reversed(logs.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def last_progress(logs: str) -> str | None:
    for line in reversed(logs.splitlines()):
        if "progress:" in line:
            return line.split("progress:", 1)[1].strip()
    return None


class JobRunner:
    """Submits `facecluster …` command lines as Ray jobs and reads their state back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.settings.ray_dashboard_url)
            except (ConnectionError, RuntimeError, OSError) as exc:
                raise BackendUnavailable(
                    f"Ray's job API at {self.settings.ray_dashboard_url} did not answer ({exc}); "
                    "set FACECLUSTER_RAY_DASHBOARD_URL to the head node's dashboard"
                ) from exc
        return self._client

    def submit(self, kind: str, arguments: list[str], library: str | None = None) -> str:
        entrypoint = shlex.join(["facecluster", *arguments])
        metadata = {"kind": kind, "library": library or ""}
        job_id: str = self.client.submit_job(
            entrypoint=entrypoint, runtime_env={"env_vars": job_env(self.settings)}, metadata=metadata
        )
        log.info("submitted %s job %s: %s", kind, job_id, entrypoint)
        return job_id

    def _info(self, job_id: str) -> Any:
        try:
            return self.client.get_job_info(job_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                raise JobNotFound(job_id) from None
            raise

    def stop(self, job_id: str) -> dict[str, Any]:
        """Ask Ray to stop the job (a no-op once it has finished); its state afterwards."""
        self._info(job_id)
        stopped = bool(self.client.stop_job(job_id))
        log.info("stop of job %s requested: %s", job_id, "stopping" if stopped else "already finished")
        return {**self.status(job_id), "stop_requested": stopped}

    def status(self, job_id: str) -> dict[str, Any]:
        info = self._info(job_id)
        logs = self.client.get_job_logs(job_id)
        status = str(info.status.value if hasattr(info.status, "value") else info.status)
        return {
            "job_id": job_id,
            "kind": (info.metadata or {}).get("kind"),
            "library": (info.metadata or {}).get("library") or None,
            "status": status,
            "message": info.message,
            "entrypoint": info.entrypoint,
            "progress": last_progress(logs),
            "result": last_json(logs) if status == "SUCCEEDED" else None,
            "start_time": info.start_time,
            "end_time": info.end_time,
        }
