"""The one settings object, read from the environment and `.env`.

Every field has a `FACECLUSTER_*` variable; where users know a variable by another name
(`MONGO_URI`, `QDRANT_URL`, `FACE_PERSON_MATCH_THRESHOLD`, …) that name works too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Provider = Literal["cuda", "cpu"]


def _env(name: str, *other_names: str) -> Any:
    """A field whose value comes from FACECLUSTER_<NAME> or any of its other names."""
    return AliasChoices(f"FACECLUSTER_{name}", *other_names)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "facecluster"


class Settings(BaseSettings):
    """Effective configuration of every facecluster process (CLI, jobs, Serve replicas)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    # Where things live.
    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias=_env("DATA_DIR"))
    models_dir: Path | None = Field(
        default=None,
        validation_alias=_env("MODELS_DIR", "DEEPFACE_HOME"),
        description="Folder holding the ONNX files; default <data_dir>/models.",
    )
    log_level: str = Field(default="INFO", validation_alias=_env("LOG_LEVEL", "LOG_LEVEL"))

    # Models.
    detector: str = Field(default="yolov5n-0.5-face", validation_alias=_env("DETECTOR"))
    embedder: str = Field(default="mobilefacenet", validation_alias=_env("EMBEDDER", "EMBED_MODEL_NAME"))
    embedder_path: Path | None = Field(
        default=None,
        validation_alias=_env("EMBEDDER_PATH", "EMBED_MODEL_PATH"),
        description="A user's own FaceNet-style ONNX; overrides the registry file of `embedder`.",
    )
    providers: Annotated[list[Provider] | None, NoDecode] = Field(
        default=None,
        validation_alias=_env("PROVIDERS"),
        description="Execution providers in order of preference; default: CUDA when a GPU is usable, then CPU.",
    )
    intra_op_threads: int = Field(default=0, ge=0, validation_alias=_env("INTRA_OP_THREADS"))
    inter_op_threads: int = Field(default=0, ge=0, validation_alias=_env("INTER_OP_THREADS"))
    ort_spinning: bool = Field(
        default=True,
        validation_alias=_env("ORT_SPINNING"),
        description="Let ONNX Runtime's threads spin while waiting: fastest for one model process per machine.",
    )
    model_base_url: str = Field(
        default="https://raw.githubusercontent.com",
        validation_alias=_env("MODEL_BASE_URL"),
        description="Where `models pull` fetches `<repo>/<commit>/<path>` from.",
    )

    # Image decoding limits.
    max_image_bytes: int = Field(
        default=50_000_000, gt=0, validation_alias=_env("MAX_IMAGE_BYTES", "MAX_IMAGE_SIZE_BYTES")
    )
    max_image_pixels: int = Field(
        default=80_000_000, gt=0, validation_alias=_env("MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS")
    )

    # Detection. The detector runs at a low floor; the thresholds below are applied after it.
    detect_batch_size: int = Field(default=8, gt=0, validation_alias=_env("DETECT_BATCH_SIZE"))
    embed_batch_size: int = Field(default=64, gt=0, validation_alias=_env("EMBED_BATCH_SIZE"))
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        validation_alias=_env("MIN_CONFIDENCE", "MIN_CONFIDENCE"),
        description="Faces scoring below are dropped; default: the detector's calibrated threshold.",
    )
    min_face_size: int = Field(default=20, ge=0, validation_alias=_env("MIN_FACE_SIZE", "MIN_FACE_SIZE"))

    # Profile (enrolment) quality checks; looser values really loosen.
    profile_min_face_size: int = Field(default=30, ge=0, validation_alias=_env("PROFILE_MIN_FACE_SIZE"))
    profile_min_confidence: float = Field(default=0.4, ge=0.0, le=1.0, validation_alias=_env("PROFILE_MIN_CONFIDENCE"))
    profile_blur_threshold: float = Field(
        default=50.0, ge=0.0, validation_alias=_env("PROFILE_BLUR_THRESHOLD", "BLUR_THRESHOLD")
    )

    # Quality score weights (normalised when combined).
    quality_weight_confidence: float = Field(default=0.3, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_CONFIDENCE"))
    quality_weight_size: float = Field(default=0.25, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_SIZE"))
    quality_weight_blur: float = Field(default=0.25, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_BLUR"))
    quality_weight_pose: float = Field(default=0.2, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_POSE"))

    # Matching and clustering; default: the embedder's calibrated values.
    person_match_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, validation_alias=_env("PERSON_MATCH_THRESHOLD", "FACE_PERSON_MATCH_THRESHOLD")
    )
    unknown_clustering_method: Literal["hdbscan", "dbscan", "agglomerative", "graph"] | None = Field(
        default=None,
        validation_alias=_env("UNKNOWN_CLUSTERING_METHOD", "FACE_UNKNOWN_CLUSTERING_METHOD"),
        description="Dual mode's method for unknown faces; default: the embedder's calibrated one.",
    )
    unknown_min_cluster_size: int = Field(
        default=3, ge=2, validation_alias=_env("UNKNOWN_MIN_CLUSTER_SIZE", "FACE_UNKNOWN_MIN_CLUSTER_SIZE")
    )
    cluster_method: Literal["dual", "graph", "hdbscan", "dbscan", "agglomerative"] = Field(
        default="dual", validation_alias=_env("CLUSTER_METHOD")
    )
    cluster_lock_s: float = Field(
        default=3600.0,
        gt=0,
        validation_alias=_env("CLUSTER_LOCK_S"),
        description="One clustering run per library at a time; a crashed run's lock lapses after this.",
    )
    cluster_min_quality: float = Field(default=0.0, ge=0.0, le=1.0, validation_alias=_env("CLUSTER_MIN_QUALITY"))
    cluster_max_faces: int | None = Field(default=None, gt=0, validation_alias=_env("CLUSTER_MAX_FACES", "MAX_FACES"))
    unknown_eps: float | None = Field(default=None, gt=0.0, validation_alias=_env("UNKNOWN_EPS", "FACE_UNKNOWN_EPS"))
    triplet_margin: float = Field(default=0.2, gt=0.0, validation_alias=_env("TRIPLET_MARGIN", "FACE_TRIPLET_MARGIN"))
    training_epochs: int = Field(default=20, gt=0, validation_alias=_env("TRAINING_EPOCHS", "FACE_TRAINING_EPOCHS"))
    training_min_faces: int = Field(
        default=5, ge=2, validation_alias=_env("TRAINING_MIN_FACES", "FACE_TRAINING_MIN_FACES")
    )
    training_mining: Literal["batch-hard", "semi-hard"] = Field(
        default="batch-hard", validation_alias=_env("TRAINING_MINING")
    )
    training_workers: int = Field(
        default=1, ge=1, validation_alias=_env("TRAINING_WORKERS"), description="Ray Train workers"
    )
    heads_dir: Path | None = Field(
        default=None,
        validation_alias=_env("HEADS_DIR"),
        description="Where trained projection heads are checkpointed; default <models_dir>/heads.",
    )

    # Backing services; unset means the embedded default under data_dir.
    mongo_uri: SecretStr | None = Field(default=None, validation_alias=_env("MONGO_URI", "MONGO_URI", "MONGODB_URL"))
    mongo_db: str = Field(default="facecluster", validation_alias=_env("MONGO_DB", "MONGO_DB", "MONGO_DB_NAME"))
    qdrant_url: str | None = Field(default=None, validation_alias=_env("QDRANT_URL", "QDRANT_URL"))
    qdrant_api_key: SecretStr | None = Field(default=None, validation_alias=_env("QDRANT_API_KEY", "QDRANT_API_KEY"))
    # S3-compatible sources (AWS, Wasabi, …); unset values fall back to boto3's own chain.
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "WASABI_ENDPOINT"),
    )
    s3_region: str | None = Field(
        default=None, validation_alias=_env("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "WASABI_REGION")
    )
    s3_access_key: SecretStr | None = Field(
        default=None, validation_alias=_env("S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "WASABI_ACCESS_KEY")
    )
    s3_secret_key: SecretStr | None = Field(
        default=None, validation_alias=_env("S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "WASABI_SECRET_KEY")
    )

    # Ingest pipeline (Ray Data). GPU fractions apply when the cluster has GPUs, CPU fractions otherwise.
    read_batch_size: int = Field(default=16, gt=0, validation_alias=_env("READ_BATCH_SIZE"))
    write_batch_size: int = Field(default=64, gt=0, validation_alias=_env("WRITE_BATCH_SIZE"))
    detector_actors: int = Field(default=0, ge=0, validation_alias=_env("DETECTOR_ACTORS"))
    embedder_actors: int = Field(default=0, ge=0, validation_alias=_env("EMBEDDER_ACTORS"))
    detector_gpus: float = Field(default=0.5, gt=0.0, le=1.0, validation_alias=_env("DETECTOR_GPUS"))
    embedder_gpus: float = Field(default=0.25, gt=0.0, le=1.0, validation_alias=_env("EMBEDDER_GPUS"))
    actor_cpus: float = Field(default=0.5, gt=0.0, validation_alias=_env("ACTOR_CPUS"))
    task_cpus: float = Field(default=0.5, gt=0.0, validation_alias=_env("TASK_CPUS"))
    write_streams: int = Field(default=4, gt=0, validation_alias=_env("WRITE_STREAMS"))
    align_max_side: int = Field(default=2048, ge=256, validation_alias=_env("ALIGN_MAX_SIDE"))
    store_retries: int = Field(default=5, ge=1, validation_alias=_env("STORE_RETRIES"))
    progress_interval_s: float = Field(default=10.0, gt=0.0, validation_alias=_env("PROGRESS_INTERVAL_S"))

    # The HTTP API (Ray Serve).
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CORS_ORIGINS", "CORS_ORIGINS")
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("API_KEYS"),
        description="Keys accepted in the X-API-Key header, comma-separated, each `name:secret` or a bare secret; "
        "when set they guard every mutating and debug route.",
    )
    serve_host: str = Field(default="127.0.0.1", validation_alias=_env("SERVE_HOST"))
    serve_port: int = Field(default=8000, gt=0, lt=65536, validation_alias=_env("SERVE_PORT"))
    allow_open_bind: bool = Field(
        default=False,
        validation_alias=_env("ALLOW_OPEN_BIND"),
        description="Serve on a non-loopback address without API keys (refused otherwise).",
    )
    max_upload_bytes: int = Field(default=20_000_000, gt=0, validation_alias=_env("MAX_UPLOAD_BYTES"))
    ray_dashboard_url: str = Field(
        default="http://127.0.0.1:8265",
        validation_alias=_env("RAY_DASHBOARD_URL", "RAY_JOB_ADDRESS"),
        description="Where the API submits its Ray jobs (the Job Submission API of the head node).",
    )
    library_root: Path | None = Field(
        default=None,
        validation_alias=_env("LIBRARY_ROOT", "LOCAL_STORAGE_PATH"),
        description="Local folder whose <bucket>/<sub> folders are the libraries; unset: s3://<bucket>/<sub>.",
    )
    engine_batch_size: int = Field(default=8, gt=0, validation_alias=_env("ENGINE_BATCH_SIZE"))
    engine_batch_wait_s: float = Field(default=0.02, ge=0.0, validation_alias=_env("ENGINE_BATCH_WAIT_S"))
    engine_replicas: int = Field(default=1, gt=0, validation_alias=_env("ENGINE_REPLICAS"))

    # Cluster → profile assignment; the threshold defaults to the embedder's calibrated one.
    assign_threshold: float | None = Field(default=None, ge=-1.0, le=1.0, validation_alias=_env("ASSIGN_THRESHOLD"))
    assign_strategy: Literal["centroid", "vote"] = Field(default="centroid", validation_alias=_env("ASSIGN_STRATEGY"))
    vote_min_share: float = Field(default=0.5, ge=0.0, le=1.0, validation_alias=_env("VOTE_MIN_SHARE"))
    vote_min_margin: float = Field(default=0.2, ge=0.0, le=1.0, validation_alias=_env("VOTE_MIN_MARGIN"))

    @field_validator("providers", "cors_origins", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("providers", mode="after")
    @classmethod
    def _no_duplicate_providers(cls, value: list[Provider] | None) -> list[Provider] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("providers must not repeat")
        return value

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").expanduser()

    @property
    def resolved_heads_dir(self) -> Path:
        return (self.heads_dir or self.resolved_models_dir / "heads").expanduser()

    def to_env(self, *, secrets: bool = False) -> dict[str, str]:
        """These settings as FACECLUSTER_* variables, for another process (a Ray job, a Serve replica);
        secrets only when asked for."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None or value == []:
                continue
            if isinstance(value, SecretStr) or (isinstance(value, list) and isinstance(value[0], SecretStr)):
                if not secrets:
                    continue
                values = value if isinstance(value, list) else [value]
                out[f"FACECLUSTER_{name.upper()}"] = ",".join(v.get_secret_value() for v in values)
            elif isinstance(value, list):
                out[f"FACECLUSTER_{name.upper()}"] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                out[f"FACECLUSTER_{name.upper()}"] = "true" if value else "false"
            else:
                out[f"FACECLUSTER_{name.upper()}"] = str(value)
        return out

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON-ready values, secrets and URI passwords masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
                out[name] = ["**********"] * len(value)
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        out["models_dir"] = str(self.resolved_models_dir)
        return out


def first_set(*values: float | None) -> float:
    """The first value that is set: a call's value, then a setting, then a calibrated default."""
    for value in values:
        if value is not None:
            return value
    raise ValueError("none of the values is set")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
