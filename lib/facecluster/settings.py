"""The one settings object, in sections, read from the environment, `.env` and `.env.<ENV>`.

Every field has a flat `FACECLUSTER_*` variable (sections group fields; they add no prefix); where users
know a variable by another name
(`MONGO_URI`, `QDRANT_URL`, `FACE_PERSON_MATCH_THRESHOLD`, …) that name works too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from facecluster.errors import InvalidSettings

Provider = Literal["cuda", "cpu"]


def _env(name: str, *other_names: str) -> Any:
    """A field whose value comes from FACECLUSTER_<NAME> or any of its other names."""
    return AliasChoices(f"FACECLUSTER_{name}", *other_names)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "facecluster"


def split_commas(value: object) -> object:
    """`a, b` → ["a", "b"]; a JSON list or a list passes as it is."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Section(BaseModel):
    """A group of settings; its fields keep their flat variable names."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", validate_default=True)


class GeneralSettings(Section):
    """Where data and models live, and logging."""

    data_dir: Path = Field(default_factory=_default_data_dir, validation_alias=_env("DATA_DIR"))
    models_dir: Path | None = Field(
        default=None,
        validation_alias=_env("MODELS_DIR", "DEEPFACE_HOME"),
        description="Folder holding the ONNX files; default <data_dir>/models.",
    )
    heads_dir: Path | None = Field(
        default=None,
        validation_alias=_env("HEADS_DIR"),
        description="Where trained projection heads are checkpointed; default <models_dir>/heads.",
    )
    log_level: str = Field(default="INFO", validation_alias=_env("LOG_LEVEL", "LOG_LEVEL"))
    library_root: Path | None = Field(
        default=None,
        validation_alias=_env("LIBRARY_ROOT", "LOCAL_STORAGE_PATH"),
        description="Local folder whose <bucket>/<sub> folders are the libraries; unset: s3://<bucket>/<sub>.",
    )
    embedded_ray_cpus: int = Field(
        default=0,
        ge=0,
        validation_alias=_env("EMBEDDED_RAY_CPUS"),
        description="Logical CPUs of the data directory's own Ray (no RAY_ADDRESS); 0: the machine's, at least 4, "
        "so the API's idle replicas leave room for an ingest next to them.",
    )
    embedded_dashboard_port: int = Field(
        default=8265,
        ge=0,
        lt=65536,
        validation_alias=_env("EMBEDDED_DASHBOARD_PORT"),
        description="The dashboard port the data directory's own Ray takes when it is free (else any free port); "
        "0: always a free port.",
    )


class ModelsSettings(Section):
    """Which face models run, and how ONNX Runtime runs them."""

    detector: str = Field(default="yolov5n-0.5-face", validation_alias=_env("DETECTOR"))
    embedder: str = Field(default="mobilefacenet", validation_alias=_env("EMBEDDER", "EMBED_MODEL_NAME"))
    embedder_path: Path | None = Field(
        default=None,
        validation_alias=_env("EMBEDDER_PATH", "EMBED_MODEL_PATH"),
        description="A user's own FaceNet-style ONNX; overrides the registry file of `embedder`.",
    )
    detector_path: Path | None = Field(
        default=None,
        validation_alias=_env("DETECTOR_PATH", "YOLO_MODEL_PATH"),
        description="A user's own build of `detector` (a YOLO-face ONNX); overrides the registry file.",
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

    @field_validator("detector", "embedder", mode="before")
    @classmethod
    def _model_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("detector", "embedder", mode="after")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        from facecluster.engine.registry import load_registry

        registry = load_registry()
        known = registry.detectors if info.field_name == "detector" else registry.embedders
        if value not in known:
            raise ValueError(f"unknown {info.field_name} {value!r}; known: {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _own_embedder(self) -> ModelsSettings:
        """A FaceNet file of the user's: named by EMBED_MODEL_PATH (alone, it selects the FaceNet contract)."""
        if self.embedder_path is not None and "embedder" not in self.model_fields_set:
            self.embedder = "facenet"
        if self.embedder == "facenet" and self.embedder_path is None:
            raise ValueError("the facenet embedder is your own file: set EMBED_MODEL_PATH to its path")
        return self

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("providers", mode="after")
    @classmethod
    def _no_duplicate_providers(cls, value: list[Provider] | None) -> list[Provider] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("providers must not repeat")
        return value


class ImagesSettings(Section):
    """Limits on the photos read."""

    max_image_bytes: int = Field(
        default=50_000_000, gt=0, validation_alias=_env("MAX_IMAGE_BYTES", "MAX_IMAGE_SIZE_BYTES")
    )
    max_image_pixels: int = Field(
        default=80_000_000, gt=0, validation_alias=_env("MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS")
    )


class DetectionSettings(Section):
    """Detection and embedding batches and thresholds; the detector runs at a low floor and these apply after it."""

    detect_batch_size: int = Field(
        default=0,
        ge=0,
        validation_alias=_env("DETECT_BATCH_SIZE"),
        description="Photos per detector run; 0: 8 on a GPU, 1 on CPU, where one canvas's activations already "
        "outgrow the caches and batches only add memory traffic (BENCHMARKS.md).",
    )
    detect_tiles: int = Field(
        default=1,
        ge=1,
        le=4,
        validation_alias=_env("DETECT_TILES"),
        description="Also detect on N x N overlapping tiles of each photo, merged by NMS (1: the whole canvas "
        "only); finds smaller faces in large crowd photos at N x N + 1 times the detector's work (BENCHMARKS.md).",
    )
    embed_batch_size: int = Field(default=64, gt=0, validation_alias=_env("EMBED_BATCH_SIZE"))
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        validation_alias=_env("MIN_CONFIDENCE", "MIN_CONFIDENCE"),
        description="Faces scoring below are dropped; default: the detector's calibrated threshold.",
    )
    min_face_size: int = Field(default=20, ge=0, validation_alias=_env("MIN_FACE_SIZE", "MIN_FACE_SIZE"))


class ProfilesSettings(Section):
    """Profile (enrolment) checks and the quality score's weights; looser values really loosen."""

    profile_min_face_size: int = Field(default=30, ge=0, validation_alias=_env("PROFILE_MIN_FACE_SIZE"))
    profile_min_confidence: float = Field(default=0.4, ge=0.0, le=1.0, validation_alias=_env("PROFILE_MIN_CONFIDENCE"))
    profile_blur_threshold: float = Field(
        default=50.0, ge=0.0, validation_alias=_env("PROFILE_BLUR_THRESHOLD", "BLUR_THRESHOLD")
    )
    quality_weight_confidence: float = Field(default=0.3, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_CONFIDENCE"))
    quality_weight_size: float = Field(default=0.25, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_SIZE"))
    quality_weight_blur: float = Field(default=0.25, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_BLUR"))
    quality_weight_pose: float = Field(default=0.2, ge=0.0, validation_alias=_env("QUALITY_WEIGHT_POSE"))


class ClusteringSettings(Section):
    """Matching and clustering; unset values come from the embedder's calibration."""

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


class TrainingSettings(Section):
    """Triplet fine-tuning of the projection head."""

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


class StoresSettings(Section):
    """MongoDB and Qdrant; unset means the embedded ones under the data directory."""

    mongo_uri: SecretStr | None = Field(default=None, validation_alias=_env("MONGO_URI", "MONGO_URI", "MONGODB_URL"))
    mongo_db: str = Field(default="facecluster", validation_alias=_env("MONGO_DB", "MONGO_DB", "MONGO_DB_NAME"))
    qdrant_url: str | None = Field(default=None, validation_alias=_env("QDRANT_URL", "QDRANT_URL"))
    qdrant_host: str | None = Field(
        default=None, validation_alias=_env("QDRANT_HOST", "QDRANT_HOST"), description="with qdrant_port: the server"
    )
    qdrant_port: int = Field(default=6333, gt=0, lt=65536, validation_alias=_env("QDRANT_PORT", "QDRANT_PORT"))
    qdrant_api_key: SecretStr | None = Field(default=None, validation_alias=_env("QDRANT_API_KEY", "QDRANT_API_KEY"))
    store_retries: int = Field(default=5, ge=1, validation_alias=_env("STORE_RETRIES"))

    @model_validator(mode="after")
    def _qdrant_server(self) -> StoresSettings:
        """QDRANT_HOST and QDRANT_PORT name a server as QDRANT_URL does (never a silent embedded fallback)."""
        if self.qdrant_url is None and self.qdrant_host:
            self.qdrant_url = f"http://{self.qdrant_host}:{self.qdrant_port}"
        return self


class S3Settings(Section):
    """S3-compatible sources (AWS, Wasabi, …); unset values fall back to boto3's own chain."""

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


class IngestSettings(Section):
    """The Ray Data ingest: batch and pool sizes; GPU shares apply when the cluster has GPUs, CPU shares otherwise."""

    read_batch_size: int = Field(default=16, gt=0, validation_alias=_env("READ_BATCH_SIZE"))
    write_batch_size: int = Field(default=64, gt=0, validation_alias=_env("WRITE_BATCH_SIZE"))
    face_actors: int = Field(
        default=0,
        ge=0,
        validation_alias=_env("FACE_ACTORS"),
        description="Model actors (detect, align, embed in one process each); 0: one per face_actor_gpus share of "
        "every GPU, else one per 4 CPUs of the cluster (at least one).",
    )
    face_actor_gpus: float = Field(default=0.5, gt=0.0, le=1.0, validation_alias=_env("FACE_ACTOR_GPUS"))
    actor_cpus: float = Field(default=0.5, gt=0.0, validation_alias=_env("ACTOR_CPUS"))
    write_streams: int = Field(default=4, gt=0, validation_alias=_env("WRITE_STREAMS"))
    align_max_side: int = Field(
        default=2560,
        ge=256,
        validation_alias=_env("ALIGN_MAX_SIDE"),
        description="The working copy faces are cropped from: longer side at most this many pixels.",
    )
    decode_min_side: int = Field(
        default=1600,
        ge=256,
        validation_alias=_env("DECODE_MIN_SIDE"),
        description="JPEGs are decoded at the largest DCT reduction (1/2, 1/4, 1/8) that keeps the longer side "
        "at least this many pixels: a 12-megapixel photo at half size.",
    )
    progress_interval_s: float = Field(default=10.0, gt=0.0, validation_alias=_env("PROGRESS_INTERVAL_S"))


class ServeSettings(Section):
    """The HTTP API on Ray Serve."""

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("CORS_ORIGINS", "CORS_ORIGINS")
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("API_KEYS"),
        description="Keys accepted in the X-API-Key header, comma-separated, each `name:secret` or a bare secret; "
        "when set every route but health, readiness, the docs and the review page's shell needs one; "
        "`name:secret:read` only reads, `name:secret:admin` may also delete and erase.",
    )
    serve_host: str = Field(default="127.0.0.1", validation_alias=_env("SERVE_HOST"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("ALLOWED_HOSTS"),
        description="Host headers the API answers (DNS rebinding); default: localhost, 127.0.0.1 and ::1 "
        "when it is bound to loopback, any otherwise.",
    )
    serve_port: int = Field(default=8000, gt=0, lt=65536, validation_alias=_env("SERVE_PORT"))
    allow_open_bind: bool = Field(
        default=False,
        validation_alias=_env("ALLOW_OPEN_BIND"),
        description="Serve on a non-loopback address without API keys (refused otherwise).",
    )
    max_upload_bytes: int = Field(default=20_000_000, gt=0, validation_alias=_env("MAX_UPLOAD_BYTES"))
    max_upload_parts: int = Field(
        default=8,
        ge=1,
        le=1000,
        validation_alias=_env("MAX_UPLOAD_PARTS"),
        description="Parts (files and fields) a multipart request may have; more is refused with 413 as it streams.",
    )
    request_timeout_s: float = Field(
        default=60.0,
        gt=0.0,
        validation_alias=_env("REQUEST_TIMEOUT_S"),
        description="A request not answered within this is answered 504 (uploads and jobs queue; they do not wait).",
    )
    thumbnail_cache_bytes: int = Field(
        default=64 * 2**20,
        ge=0,
        validation_alias=_env("THUMBNAIL_CACHE_BYTES"),
        description="Memory for face thumbnails served recently, per API replica.",
    )
    ray_dashboard_url: str | None = Field(
        default=None,
        validation_alias=_env("RAY_DASHBOARD_URL", "RAY_JOB_ADDRESS"),
        description="Where the API submits its Ray jobs (the Job Submission API of the head node); unset: the "
        "data directory's Ray head, else port 8265 of RAY_ADDRESS's host.",
    )
    engine_batch_size: int = Field(default=8, gt=0, validation_alias=_env("ENGINE_BATCH_SIZE"))
    engine_batch_wait_s: float = Field(default=0.02, ge=0.0, validation_alias=_env("ENGINE_BATCH_WAIT_S"))
    engine_replicas: int = Field(default=1, gt=0, validation_alias=_env("ENGINE_REPLICAS"))

    @field_validator("cors_origins", "api_keys", "allowed_hosts", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return split_commas(value)


class AssignmentSettings(Section):
    """Cluster → profile assignment; the threshold defaults to the embedder's calibrated one."""

    assign_threshold: float | None = Field(default=None, ge=-1.0, le=1.0, validation_alias=_env("ASSIGN_THRESHOLD"))
    assign_strategy: Literal["centroid", "vote"] = Field(default="centroid", validation_alias=_env("ASSIGN_STRATEGY"))
    vote_min_share: float = Field(default=0.5, ge=0.0, le=1.0, validation_alias=_env("VOTE_MIN_SHARE"))
    vote_min_margin: float = Field(default=0.2, ge=0.0, le=1.0, validation_alias=_env("VOTE_MIN_MARGIN"))


SECTIONS: dict[str, type[Section]] = {
    "general": GeneralSettings,
    "models": ModelsSettings,
    "images": ImagesSettings,
    "detection": DetectionSettings,
    "profiles": ProfilesSettings,
    "clustering": ClusteringSettings,
    "training": TrainingSettings,
    "stores": StoresSettings,
    "s3": S3Settings,
    "ingest": IngestSettings,
    "serve": ServeSettings,
    "assignment": AssignmentSettings,
}
#: Which section holds each setting.
SECTION_OF = {field: section for section, model in SECTIONS.items() for field in model.model_fields}


def file_references() -> dict[str, str]:
    """The `<VARIABLE>_FILE` variables of this process that name files holding settings (secrets, mostly):
    what another process may be given instead of the values."""
    names = {
        v.lower() for model in SECTIONS.values() for info in model.model_fields.values() for v in variable_names(info)
    }
    return {
        key: value for key, value in os.environ.items() if key.lower().endswith("_file") and key.lower()[:-5] in names
    }


def variable_names(info: FieldInfo) -> list[str]:
    """The environment variables a setting is read from, in order of preference."""
    alias = info.validation_alias
    return [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else []


class FlatEnvSource(PydanticBaseSettingsSource):
    """Every section's settings from their flat variables: the environment first, then `.env` files
    (`.env`, then `.env.<ENV>` when ENV names a deployment such as `dev`)."""

    def __init__(self, settings_cls: type[BaseSettings], env_files: list[Path]) -> None:
        super().__init__(settings_cls)
        self.env_files = env_files

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # values come from __call__, section by section

    def _dotenv(self, environ: Mapping[str, str]) -> dict[str, str]:
        found: dict[str, str] = {}
        files = list(self.env_files)
        for path in files:
            if path.is_file():
                found.update({k.lower(): v for k, v in dotenv_values(path).items() if v is not None})
        deployment = environ.get("env") or found.get("env")
        if deployment and files:
            extra = files[0].with_name(f"{files[0].name}.{deployment}")
            if extra.is_file():
                found.update({k.lower(): v for k, v in dotenv_values(extra).items() if v is not None})
        return found

    def __call__(self) -> dict[str, Any]:
        environ = {key.lower(): value for key, value in os.environ.items()}
        dotenv = self._dotenv(environ)
        out: dict[str, dict[str, str]] = {}
        for section, model in SECTIONS.items():
            for name, info in model.model_fields.items():
                variables = [v.lower() for v in variable_names(info)]
                value = next((environ[v] for v in variables if v in environ), None)
                if value is None:
                    value = next((dotenv[v] for v in variables if v in dotenv), None)
                if value is None:  # a reference: <VARIABLE>_FILE names a file that holds the value
                    path = next(
                        (
                            source[f"{v}_file"]
                            for source in (environ, dotenv)
                            for v in variables
                            if f"{v}_file" in source
                        ),
                        None,
                    )
                    value = None if path is None else Path(path).read_text(encoding="utf-8").strip()
                if value is not None:
                    out.setdefault(section, {})[name] = value
        return out


class Settings(BaseSettings):
    """Effective configuration of every facecluster process (CLI, jobs, Serve replicas), in sections.

    Built from flat names too (`Settings(data_dir=…)`, `settings.updated(max_faces=…)`): each goes to
    its section."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    profiles: ProfilesSettings = Field(default_factory=ProfilesSettings)
    clustering: ClusteringSettings = Field(default_factory=ClusteringSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    stores: StoresSettings = Field(default_factory=StoresSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    assignment: AssignmentSettings = Field(default_factory=AssignmentSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = getattr(dotenv_settings, "env_file", None)
        files = [] if given is None else [Path(given)] if isinstance(given, str | Path) else [Path(f) for f in given]
        return init_settings, FlatEnvSource(settings_cls, files)

    @model_validator(mode="before")
    @classmethod
    def _flat_names_to_sections(cls, data: Any) -> Any:
        """Flat setting names (from callers) join their section, over what the section had."""
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS:
                given = value.model_dump() if isinstance(value, BaseModel) else dict(value)
                out[key] = {**given, **out.get(key, {})}
        for key, value in data.items():
            if key in SECTION_OF:
                out.setdefault(SECTION_OF[key], {})[key] = value
        return out

    def updated(self, **values: Any) -> Settings:
        """These settings with some changed, by flat name, validated."""
        unknown = sorted(set(values) - set(SECTION_OF))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        return type(self).model_validate({**self.model_dump(), **values})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy; flat names in `update` go to their sections, validated, as with `updated`."""
        return self.updated(**update) if update else super().model_copy(deep=deep)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name."""
        return {name: value for section in SECTIONS for name, value in getattr(self, section).model_dump().items()}

    @property
    def resolved_models_dir(self) -> Path:
        return (self.general.models_dir or self.general.data_dir / "models").expanduser()

    @property
    def resolved_heads_dir(self) -> Path:
        return (self.general.heads_dir or self.resolved_models_dir / "heads").expanduser()

    def to_env(self) -> dict[str, str]:
        """These settings as FACECLUSTER_* variables for another process, secrets left out."""
        out: dict[str, str] = {}
        for name, value in self.flat().items():
            if value is None or value == [] or isinstance(value, SecretStr):
                continue
            if isinstance(value, list) and isinstance(value[0], SecretStr):
                continue
            if isinstance(value, list):
                out[f"FACECLUSTER_{name.upper()}"] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                out[f"FACECLUSTER_{name.upper()}"] = "true" if value else "false"
            else:
                out[f"FACECLUSTER_{name.upper()}"] = str(value)
        return out

    def secrets(self) -> dict[str, str]:
        """The secrets these settings hold, by FACECLUSTER_* variable (lists comma-separated)."""
        out: dict[str, str] = {}
        for name, value in self.flat().items():
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, SecretStr) for v in values):
                out[f"FACECLUSTER_{name.upper()}"] = ",".join(v.get_secret_value() for v in values)
        return out

    def masked(self) -> dict[str, dict[str, Any]]:
        """The effective settings by section, as JSON-ready values, secrets masked."""
        out: dict[str, dict[str, Any]] = {}
        for section in SECTIONS:
            shown: dict[str, Any] = {}
            for name, value in getattr(self, section).model_dump().items():
                if isinstance(value, SecretStr):
                    shown[name] = "**********" if value.get_secret_value() else ""
                elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
                    shown[name] = ["**********"] * len(value)
                elif isinstance(value, Path):
                    shown[name] = str(value)
                else:
                    shown[name] = value
            out[section] = shown
        out["general"]["models_dir"] = str(self.resolved_models_dir)
        return out


def first_set(*values: float | None) -> float:
    """The first value that is set: a call's value, then a setting, then a calibrated default."""
    for value in values:
        if value is not None:
            return value
    raise ValueError("none of the values is set")


def setting_names(section: str, field: str) -> list[str]:
    """The environment variables a setting is read from, its own name first."""
    info = SECTIONS[section].model_fields.get(field) if section in SECTIONS else None
    alias = info.validation_alias if info is not None else None
    return [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else []


def invalid_settings(exc: ValidationError) -> InvalidSettings:
    """One line per setting that does not validate: the variable, the value given, what is wrong."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        names = setting_names(loc[0], loc[1]) if len(loc) >= 2 else []
        names = sorted(names, key=lambda name: name not in os.environ)  # the one the user set, first
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        if names and isinstance(given, str | int | float):
            problems.append(f"{names[0]}={given!r}: {message}")
        elif names:
            problems.append(f"{names[0]}: {message}")
        else:
            problems.append(message)
    return InvalidSettings("invalid settings: " + "; ".join(problems))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; settings that do not validate are an `InvalidSettings` naming
    each variable and what is wrong with it."""
    try:
        return Settings()
    except ValidationError as exc:
        raise invalid_settings(exc) from None
