"""Long operations as Ray jobs, through the Job Submission API, so they show in the dashboard."""

from __future__ import annotations

import logging
import os
import shlex
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from facecluster.deployment import worker_env
from facecluster.errors import NotFound
from facecluster.jobs import KINDS, Options, job_library
from facecluster.runtime import head_token_path, ray_auth_token, running_head
from facecluster.settings import Settings
from facecluster.store.backoff import BackendUnavailable
from facecluster.store.documents import JobDoc
from facecluster.store.meta import MetaStore

log = logging.getLogger(__name__)


class JobNotFound(NotFound):
    def __str__(self) -> str:
        return f"job {self.args[0]} not found"


@dataclass(frozen=True)
class JobApi:
    """Where the Job Submission API answers and the token it needs (None: send none)."""

    url: str
    token: str | None


def job_api(settings: Settings) -> JobApi:
    """`FACECLUSTER_RAY_DASHBOARD_URL`, else the data directory's Ray head (when it is the cluster this
    process uses), else port 8265 of `RAY_ADDRESS`'s host. The token: the data directory's for its own head,
    else Ray's own (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`)."""
    address = os.environ.get("RAY_ADDRESS", "")
    head = running_head(settings.general.data_dir)
    if head is not None and address and address.rsplit(":", 1)[-1] != head.gcs.rsplit(":", 1)[-1]:
        head = None  # this process uses another cluster
    url = settings.serve.ray_dashboard_url or (head.dashboard if head else dashboard_of(address))
    if url is None:
        raise BackendUnavailable(
            "Ray's job API: no dashboard to submit to (the data directory's Ray head does not run and "
            "RAY_ADDRESS is not set); set FACECLUSTER_RAY_DASHBOARD_URL to the head node's dashboard"
        )
    url = url.rstrip("/")
    if head is not None and url == head.dashboard:
        return JobApi(url, head_token_path(settings.general.data_dir).read_text().strip())
    return JobApi(url, ray_auth_token())


def dashboard_of(address: str) -> str | None:
    """The dashboard of the head at `RAY_ADDRESS` (`host:port`, `ray://host:port`, `http://…`), on Ray's
    default port; None for no address or a new local one."""
    if address.startswith(("http://", "https://")):
        return address
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    if not host or host == "local":
        return None
    return f"http://{'127.0.0.1' if host == 'auto' else host}:8265"


@contextmanager
def answered(api: JobApi, doing: str) -> Iterator[None]:
    """Ray's job API failures as `BackendUnavailable` (a 503) that names the dashboard and what to set."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        given = "the token this process has was refused" if api.token else "it needs a token this process does not have"
        raise BackendUnavailable(
            f"Ray's job API at {api.url} {doing}: {given} ({exc.message}); give Ray's token with RAY_AUTH_TOKEN "
            "or RAY_AUTH_TOKEN_PATH, or set FACECLUSTER_RAY_DASHBOARD_URL to the dashboard of the head you mean"
        ) from exc
    except (ConnectionError, OSError) as exc:
        raise BackendUnavailable(
            f"Ray's job API at {api.url} {doing}: {exc}; set FACECLUSTER_RAY_DASHBOARD_URL to the head node's dashboard"
        ) from exc


class JobRunner:
    """Queues jobs of the registered kinds on Ray and reads their state back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._api: JobApi | None = None

    @property
    def api(self) -> JobApi:
        if self._api is None:
            self._api = job_api(self.settings)
        return self._api

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            api = self.api
            headers = {"Authorization": f"Bearer {api.token}"} if api.token else None
            with answered(api, "did not answer"):
                try:
                    self._client = JobSubmissionClient(api.url, headers=headers)
                except RuntimeError as exc:  # its version check failed: no job API there
                    raise ConnectionError(str(exc)) from exc
        return self._client

    def submit(self, meta: MetaStore, kind: str, options: Options) -> str:
        """Queue a `kind` job: its record in `jobs` first (so its status is known from the start), then the
        Ray job that runs `facecluster job` on the same stores."""
        job_id = f"job_{uuid.uuid4().hex[:16]}"
        meta.queue_job(job_id, kind, job_library(options) or "", options.model_dump())
        entrypoint = shlex.join(["facecluster", "job", kind, "--id", job_id, "--options", options.model_dump_json()])
        try:
            with answered(self.api, "refused the job"):
                try:
                    self.client.submit_job(
                        entrypoint=entrypoint,
                        submission_id=job_id,
                        runtime_env={"env_vars": worker_env(self.settings)},
                        metadata={"kind": kind, "library": job_library(options) or ""},
                    )
                except RuntimeError as exc:
                    raise ConnectionError(str(exc)) from exc
        except BackendUnavailable as exc:
            meta.finish_job(job_id, "failed", {"error": f"not submitted: {exc}"})
            raise
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
        with answered(self.api, "did not stop the job"):
            stopped = bool(self.client.stop_job(job_id))
        log.info("stop of job %s requested: %s", job_id, "stopping" if stopped else "already finished")
        return {**self.status(meta, job_id), "stop_requested": stopped}

    def status(self, meta: MetaStore, job_id: str) -> dict[str, Any]:
        """Ray's state of the job with the progress and result the job recorded."""
        record = self._record(meta, job_id)
        try:
            with answered(self.api, "did not say how the job went"):
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
