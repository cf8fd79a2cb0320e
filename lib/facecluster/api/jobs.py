"""Long operations as Ray jobs, through the Job Submission API, so they show in the dashboard."""

from __future__ import annotations

import logging
import shlex
import uuid
from typing import Any

from facecluster.errors import NotFound
from facecluster.jobs import KINDS, Options, job_library
from facecluster.runtime import worker_env
from facecluster.settings import Settings
from facecluster.store.backoff import BackendUnavailable
from facecluster.store.documents import JobDoc
from facecluster.store.meta import MetaStore

log = logging.getLogger(__name__)


class JobNotFound(NotFound):
    def __str__(self) -> str:
        return f"job {self.args[0]} not found"


class JobRunner:
    """Queues jobs of the registered kinds on Ray and reads their state back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.settings.serve.ray_dashboard_url)
            except (ConnectionError, RuntimeError, OSError) as exc:
                raise BackendUnavailable(
                    f"Ray's job API at {self.settings.serve.ray_dashboard_url} did not answer ({exc}); "
                    "set FACECLUSTER_RAY_DASHBOARD_URL to the head node's dashboard"
                ) from exc
        return self._client

    def submit(self, meta: MetaStore, kind: str, options: Options) -> str:
        """Queue a `kind` job: its record in `jobs` first (so its status is known from the start), then the
        Ray job that runs `facecluster job` on the same stores."""
        job_id = f"job_{uuid.uuid4().hex[:16]}"
        meta.queue_job(job_id, kind, job_library(options) or "", options.model_dump())
        entrypoint = shlex.join(["facecluster", "job", kind, "--id", job_id, "--options", options.model_dump_json()])
        try:
            self.client.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env={"env_vars": worker_env(self.settings)},
                metadata={"kind": kind, "library": job_library(options) or ""},
            )
        except (ConnectionError, RuntimeError, OSError) as exc:
            meta.finish_job(job_id, "failed", {"error": f"not submitted: {exc}"})
            raise BackendUnavailable(
                f"Ray's job API at {self.settings.serve.ray_dashboard_url} refused the job: {exc}"
            ) from exc
        log.info("submitted %s job %s", kind, job_id)
        return job_id

    def _record(self, meta: MetaStore, job_id: str) -> JobDoc:
        """The job's record; jobs this API did not queue are not found."""
        record = meta.job(job_id)
        if record is None or record.get("kind") not in KINDS:
            raise JobNotFound(job_id)
        return record

    def stop(self, meta: MetaStore, job_id: str) -> dict[str, Any]:
        """Ask Ray to stop the job (a no-op once it has finished); its state afterwards."""
        self._record(meta, job_id)
        stopped = bool(self.client.stop_job(job_id))
        log.info("stop of job %s requested: %s", job_id, "stopping" if stopped else "already finished")
        return {**self.status(meta, job_id), "stop_requested": stopped}

    def status(self, meta: MetaStore, job_id: str) -> dict[str, Any]:
        """Ray's state of the job with the progress and result the job recorded."""
        record = self._record(meta, job_id)
        try:
            info = self.client.get_job_info(job_id)
        except RuntimeError as exc:  # the Ray cluster restarted and forgot it: the record still says how it went
            log.info("Ray does not know job %s (%s)", job_id, exc)
            info = None
        status = record["status"].upper() if info is None else str(getattr(info.status, "value", info.status))
        return {
            "job_id": job_id,
            "kind": record["kind"],
            "library": record.get("library") or None,
            "status": status,
            "message": None if info is None else info.message,
            "options": record.get("options"),
            "progress": record.get("progress"),
            "result": record.get("result") if record.get("status") in ("succeeded", "failed") else None,
            "start_time": None if info is None else info.start_time,
            "end_time": None if info is None else info.end_time,
        }
