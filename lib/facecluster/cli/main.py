"""The `facecluster` console script."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facecluster.eval import INGEST_RUNS
from facecluster.jobs import KINDS
from facecluster.logs import configure_logging
from facecluster.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from facecluster.engine.faces import Face

log = logging.getLogger("facecluster")


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def emit(obj: Any) -> None:
    """One JSON object on its own stdout line (times in ISO 8601)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=_json_value) + "\n")
    sys.stdout.flush()


def _existing_path(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value} does not exist")
    return path


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers")
    return sizes


def _ingest_runs(value: str) -> tuple[str, ...]:
    runs = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(set(runs) - set(INGEST_RUNS))
    if unknown or not runs:
        raise argparse.ArgumentTypeError(f"{value!r}: runs are any of {','.join(INGEST_RUNS)}")
    return runs


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    methods = ["dual", "graph", "hdbscan", "dbscan", "agglomerative"]
    parser.add_argument("--method", choices=methods, default=None, help="default: FACECLUSTER_CLUSTER_METHOD (dual)")
    parser.add_argument("--person-threshold", type=float, default=None, help="dual: match to known persons (cosine)")
    parser.add_argument("--unknown-method", choices=methods[1:], default=None, help="dual: method for the rest")
    parser.add_argument("--min-cluster-size", type=int, default=None)
    parser.add_argument("--eps", type=float, default=None, help="cosine distance radius (1 - similarity)")
    parser.add_argument("--threshold", type=float, default=None, help="cosine similarity threshold")
    parser.add_argument("--max-faces", type=int, default=None)
    parser.add_argument("--min-quality", type=float, default=None, help="quality gate: faces below are not clustered")
    parser.add_argument(
        "--incremental",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cluster only the faces stored since the last run into the library's clustering "
        "(default: yes in a pipeline once the library has a run, no in `cluster`)",
    )


def _cluster_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = ("method", "person_threshold", "unknown_method", "min_cluster_size", "eps", "threshold", "max_faces")
    return {name: getattr(args, name) for name in (*names, "min_quality", "incremental")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facecluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("status", help="the embedded services of the data directory and the configured stores")
    commands.add_parser("stop", help="stop the data directory's Ray head and MongoDB-wire server")
    commands.add_parser("openapi", help="the HTTP API's OpenAPI spec as JSON, without starting Ray or a store")

    config = commands.add_parser("config", help="show the effective settings")
    config_actions = config.add_subparsers(dest="action", required=True)
    config_actions.add_parser("show", help="settings as JSON, secrets masked")
    config_check = config_actions.add_parser(
        "check", help="connect to MongoDB, Qdrant, Ray and the models as configured; exit 2 naming what fails"
    )
    config_check.add_argument("--source", help="an s3://bucket/prefix to list one key of")

    models = commands.add_parser("models", help="list, pull and verify the ONNX models")
    model_actions = models.add_subparsers(dest="action", required=True)
    model_actions.add_parser("list", help="the registry, one JSON object per model")
    pull = model_actions.add_parser("pull", help="download from upstream into the models directory, checking sha256")
    pull.add_argument("names", nargs="*", help="models to pull (default: every model with an upstream source)")
    model_actions.add_parser("verify", help="check the files in the models directory against the registry")

    detect = commands.add_parser("detect", help="faces of images or folders, one JSON line per image")
    detect.add_argument("paths", nargs="+", type=_existing_path, metavar="PATH")
    detect.add_argument("--min-confidence", type=float, default=None)
    detect.add_argument("--min-face-size", type=float, default=None)

    for name, text in (
        ("ingest", "detect, embed and store every face of a folder, s3://bucket/prefix or manifest"),
        ("pipeline", "the whole job on SOURCE: ingest (then clustering, as it arrives)"),
    ):
        job = commands.add_parser(name, help=text)
        job.add_argument(
            "source", metavar="SOURCE", help="a folder, s3://bucket/prefix, or a .parquet/.csv/.txt manifest"
        )
        job.add_argument("--library", default=None, help="library name (default: from the folder or bucket/prefix)")
        job.add_argument("--limit", type=int, default=None, help="at most N photos")
        job.add_argument("--force", action="store_true", help="redo photos already stored with the same models")
        job.add_argument("--prune", action="store_true", help="remove photos no longer in SOURCE, with their faces")
        if name == "pipeline":
            _cluster_arguments(job)
            job.add_argument("--train", action="store_true", help="then train on the labelled persons and re-cluster")
            _train_arguments(job)

    erase = commands.add_parser("erase", help="erase a face, a photo, a person or a user's data from every store")
    erase_what = erase.add_subparsers(dest="what", required=True, metavar="WHAT")
    erase_what.add_parser("face", help="one face").add_argument("id", metavar="FACE_ID")
    erase_image = erase_what.add_parser("image", help="every face of one photo")
    erase_image.add_argument("id", metavar="KEY")
    erase_image.add_argument("--library", required=True)
    erase_what.add_parser("person", help="a person and every face named as them").add_argument("id", metavar="PER_ID")
    erase_what.add_parser("user", help="a user's profile, templates and assignments").add_argument(
        "id", metavar="USER_ID"
    )

    libraries = commands.add_parser("library", help="whole libraries")
    library_actions = libraries.add_subparsers(dest="action", required=True)
    library_actions.add_parser("list", help="libraries with stored photos")
    library_actions.add_parser(
        "delete", help="remove a library: photos, faces, vectors of every version, persons, clusters, runs"
    ).add_argument("library")

    queued = commands.add_parser("job", help="run a queued job (what the API submits to Ray)")
    queued.add_argument("kind", choices=sorted(KINDS))
    queued.add_argument("--options", default="{}", help="the kind's options as JSON")
    queued.add_argument("--id", default=None, help="the job's record in MongoDB's jobs collection")

    clustering = commands.add_parser("cluster", help="cluster a library's faces into persons and unknown clusters")
    clustering.add_argument("--library", required=True)
    clustering.add_argument(
        "--shards", type=int, default=1, help="a full run across the Ray cluster in N shards (graph method)"
    )
    _cluster_arguments(clustering)

    stats = commands.add_parser("stats", help="persons, clusters, unclustered faces, multi-person photos")
    stats.add_argument("--library", default=None)

    check = commands.add_parser("check", help="MongoDB faces against Qdrant points")
    check.add_argument("--library", default=None)
    check.add_argument("--repair", action="store_true", help="delete orphan points, re-embed faces missing a vector")

    export = commands.add_parser("export", help="export stored data as JSON lines")
    export.add_subparsers(dest="action", required=True).add_parser("faces", help="one face a line").add_argument(
        "--library", required=True
    )

    match = commands.add_parser("match", help="incremental assignment: new faces to known persons and clusters")
    match.add_argument("--library", required=True)
    match.add_argument("--person-threshold", type=float, default=None)
    match.add_argument("--max-faces", type=int, default=None)

    assign = commands.add_parser("assign", help="assign clusters to known users (profiles)")
    chosen = assign.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--library", action="append", help="repeat for several libraries")
    chosen.add_argument("--all", action="store_true", help="every library")
    assign.add_argument("--clustering-id", default=None, help="default: each library's latest run")
    assign.add_argument("--strategy", choices=["centroid", "vote"], default=None)
    assign.add_argument("--threshold", type=float, default=None)
    assign.add_argument("--dry-run", action="store_true")
    assign.add_argument("--overwrite", action="store_true")

    profiles = commands.add_parser("profiles", help="profiles of known users")
    profile_actions = profiles.add_subparsers(dest="action", required=True)
    add = profile_actions.add_parser("add", help="create or extend USER_ID's profile from photos with one face each")
    add.add_argument("user_id")
    add.add_argument("images", nargs="+", type=_existing_path, metavar="IMAGE")
    add.add_argument("--replace", action="store_true", help="drop the earlier enrolment faces")
    profile_actions.add_parser("list", help="one JSON line per profile")
    profile_actions.add_parser("delete", help="delete a profile and its assignments").add_argument("user_id")

    train = commands.add_parser(
        "train", help="fine-tune a projection head on human-labelled persons, re-project every vector, switch to it"
    )
    _train_arguments(train)
    train.add_argument("--library", default=None, help="train on one library's labels (default: all)")
    train.add_argument("--no-switch", action="store_true", help="record the trained version without switching to it")
    chosen_version = train.add_mutually_exclusive_group()
    chosen_version.add_argument("--rollback", action="store_true", help="return to the previous vector version instead")
    chosen_version.add_argument(
        "--activate", metavar="VERSION", default=None, help="switch to a recorded version instead"
    )

    serve = commands.add_parser("serve", help="the HTTP API on Ray Serve")
    serve.add_argument("--host", default=None, help="default: FACECLUSTER_SERVE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default: FACECLUSTER_SERVE_PORT (8000)")

    evaluate = commands.add_parser("eval", help="accuracy harnesses")
    eval_actions = evaluate.add_subparsers(dest="action", required=True)
    verify = eval_actions.add_parser("verify", help="LFW-style pair verification, cross-validated threshold")
    verify.add_argument("--images", type=_existing_path, required=True, help="DIR/Name/Name_NNNN.jpg")
    verify.add_argument("--pairs", type=_existing_path, required=True, help="LFW pairs file")
    recall = eval_actions.add_parser("detect", help="face recall against annotated boxes")
    recall.add_argument("--images", type=_existing_path, required=True, help="folder the CSV's paths are under")
    recall.add_argument("--boxes", type=_existing_path, required=True, help="CSV: path,left,top,width,height")
    recall.add_argument("--iou", type=float, default=0.4)
    enrol = eval_actions.add_parser("enrol", help="same- vs different-person cosine on DIR/<person>/ photos")
    enrol.add_argument("--images", type=_existing_path, required=True)
    scored = eval_actions.add_parser("cluster", help="every clustering method scored on an LFW-layout folder")
    scored.add_argument("--images", type=_existing_path, required=True, help="DIR/Name/Name_NNNN.jpg")
    scored.add_argument("--limit", type=int, default=None)
    tuned = eval_actions.add_parser("train", help="held-out persons before and after training on an LFW-layout folder")
    tuned.add_argument("--images", type=_existing_path, required=True, help="DIR/Name/Name_NNNN.jpg")
    tuned.add_argument("--min-images", type=int, default=5, help="persons with at least this many photos")
    tuned.add_argument("--persons", type=int, default=None, help="at most N persons (default: all)")
    _train_arguments(tuned)

    bench = commands.add_parser("bench", help="speed and memory benchmarks")
    bench_actions = bench.add_subparsers(dest="action", required=True)
    engine = bench_actions.add_parser("engine", help="detector ms/image and embedder ms/face by batch size")
    engine.add_argument("--images", type=_existing_path, default=None, help="folder of photos (default: synthetic)")
    engine.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 32])
    engine.add_argument("--repeats", type=int, default=3)
    grow = bench_actions.add_parser("cluster", help="clustering time and peak memory by number of faces")
    grow.add_argument("--images", type=_existing_path, required=True, help="photos whose faces seed the set")
    grow.add_argument("--sizes", type=_batch_sizes, default=[10_000, 30_000, 100_000])
    grow.add_argument("--method", choices=["graph", "hdbscan", "dbscan", "agglomerative"], default=None)
    served = bench_actions.add_parser("serve", help="concurrent clients against the API on a local Serve")
    served.add_argument("--images", type=_existing_path, required=True, help="photos, rescaled to 1 megapixel")
    served.add_argument("--clients", type=int, default=32)
    served.add_argument("--seconds", type=float, default=60.0)
    tiling = bench_actions.add_parser("tiling", help="faces on the whole canvas vs overlapping tiles")
    tiling.add_argument("--photos", type=_existing_path, required=True, help="../shared/data/photos")
    tiling.add_argument("--tiles", type=_batch_sizes, default=[1, 2, 3])
    listing = bench_actions.add_parser("listing", help="the ingest driver's memory listing S3 vs a manifest")
    listing.add_argument("--sizes", type=_batch_sizes, default=[2_000, 20_000], help="bucket sizes, in keys")
    arriving = bench_actions.add_parser(
        "incremental", help="faces arriving in increments: incremental clustering against one full run"
    )
    arriving.add_argument("--images", type=_existing_path, required=True, help="photos whose faces seed the set")
    arriving.add_argument("--faces", type=int, default=0, help="grow the set to N faces (default: the photos')")
    arriving.add_argument("--initial", type=float, default=0.5, help="share clustered by a full run first")
    arriving.add_argument("--increments", type=int, default=5, help="parts the rest arrives in")
    arriving.add_argument("--pool", type=int, default=0, help="unclustered distractor faces in the library")
    arriving.add_argument("--no-match", action="store_true", help="skip the `match` baseline")
    sharded = bench_actions.add_parser("sharded", help="a full clustering run in one process vs across the cluster")
    sharded.add_argument("--faces", type=int, required=True, help="library size, e.g. 100000 or 1000000")
    sharded.add_argument("--images", type=_existing_path, required=True, help="photos whose faces seed the set")
    sharded.add_argument("--shards", type=int, default=3, help="shards of the distributed run")
    scale = bench_actions.add_parser("scale", help="every library-wide operation on a library of N faces")
    scale.add_argument("--faces", type=int, required=True, help="library size, e.g. 100000 or 1000000")
    scale.add_argument("--images", type=_existing_path, required=True, help="photos whose faces seed the set")
    scale.add_argument("--clients", type=int, default=8, help="concurrent face searches")
    scale.add_argument("--search-seconds", type=float, default=30.0)
    ingest = bench_actions.add_parser("ingest", help="model-only bound vs naive loop vs the Ray pipeline")
    ingest.add_argument("source", metavar="SOURCE", help="a folder or s3://bucket/prefix")
    ingest.add_argument("--limit", type=int, default=None, help="the first N photos of the source")
    ingest.add_argument(
        "--runs",
        type=_ingest_runs,
        default=INGEST_RUNS,
        help=f"any of {','.join(INGEST_RUNS)} (cw: (c) again on the Ray head (c) started)",
    )
    return parser


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None, help="default: FACE_TRAINING_EPOCHS (20)")
    parser.add_argument("--margin", type=float, default=None, help="default: FACE_TRIPLET_MARGIN (0.2)")
    parser.add_argument("--min-faces", type=int, default=None, help="persons with at least N labelled faces (5)")


def iter_image_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given, and the image files under folders, in sorted order."""
    from facecluster.engine.decode import IMAGE_SUFFIXES

    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _chunks(items: Iterator[Path], size: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def face_json(face: Face) -> dict[str, Any]:
    """A detected face as the CLI and the API print it."""
    return {
        "bbox": [round(v, 1) for v in face.detection.xywh],
        "score": round(face.detection.score, 4),
        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.detection.landmarks],
        "quality": face.quality.to_dict(),
    }


def cmd_detect(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.engine.decode import ImageDecodeError, decode_photo
    from facecluster.engine.faces import FaceEngine

    engine = FaceEngine.from_settings(settings)
    for chunk in _chunks(iter_image_files(args.paths), engine.detect_batch_size * 4):
        results: list[dict[str, Any]] = []
        decoded: list[tuple[dict[str, Any], NDArray[np.uint8]]] = []
        for path in chunk:
            result: dict[str, Any] = {"path": str(path)}
            results.append(result)
            try:
                pixels = decode_photo(path.read_bytes(), settings.images).pixels
            except (OSError, ImageDecodeError) as exc:
                result["error"] = str(exc)
                continue
            result.update(width=int(pixels.shape[1]), height=int(pixels.shape[0]))
            decoded.append((result, pixels))
        found = engine.detect(
            [pixels for _, pixels in decoded], min_confidence=args.min_confidence, min_size=args.min_face_size
        )
        for (result, _), faces in zip(decoded, found, strict=True):
            result["faces"] = [face_json(face) for face in faces]
        for result in results:
            emit(result)
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.engine.modelstore import ModelFetchError, pull_model, verify_models
    from facecluster.engine.registry import ModelSpec, load_registry

    registry = load_registry()
    models_dir = settings.resolved_models_dir
    if args.action == "list":
        for spec in registry.all():
            emit({"kind": "detector" if spec.name in registry.detectors else "embedder", **spec.model_dump()})
        return 0
    if args.action == "verify":
        statuses = verify_models(models_dir)
        for status in statuses:
            emit(status.to_dict())
        return 0 if all(s.status in {"ok", "missing"} for s in statuses) else 1
    names = args.names or [spec.name for spec in registry.all() if spec.upstream is not None]
    failed = 0
    for name in names:
        found: ModelSpec | None = registry.detectors.get(name) or registry.embedders.get(name)
        if found is None:
            log.error("unknown model %r", name)
            failed += 1
            continue
        try:
            emit(pull_model(found, models_dir, settings.models.model_base_url).to_dict())
        except ModelFetchError as exc:
            log.error("%s", exc)
            failed += 1
    return 1 if failed else 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.ingest.pipeline import run_ingest
    from facecluster.jobs import ClusterOptions, PipelineJob, TrainOptions, run_pipeline, validated

    if args.command == "pipeline":
        trained = {"epochs": args.epochs, "margin": args.margin, "min_faces": args.min_faces}
        options = PipelineJob(
            source=args.source,
            library=args.library,
            limit=args.limit,
            force=args.force,
            prune=args.prune,
            cluster=validated(ClusterOptions, _cluster_overrides(args)),
            train=validated(TrainOptions, trained) if args.train else None,
        )
        result = run_pipeline(settings, options, partial(log.info, "progress: %s"))
    else:
        result = run_ingest(
            settings, args.source, library=args.library, limit=args.limit, force=args.force, prune=args.prune
        ).to_dict()
    ray.shutdown()  # flush worker logs before the summary, so it is the last line
    emit(result)
    return 0


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.cluster.commands import run_cluster
    from facecluster.jobs import ClusterOptions, validated

    overrides = validated(ClusterOptions, _cluster_overrides(args)).model_dump()
    summary = run_cluster(settings, args.library, shards=args.shards, **overrides)
    ray.shutdown()
    emit(summary.to_dict())
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.train.job import activate, run_rollback, run_train

    if args.rollback:
        result = run_rollback(settings)
    elif args.activate:
        result = activate(settings, args.activate)
    else:
        result = run_train(
            settings,
            epochs=args.epochs,
            margin=args.margin,
            min_faces=args.min_faces,
            library=args.library,
            switch=not args.no_switch,
        ).to_dict()
    ray.shutdown()
    emit(result)
    return 0


def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.people.stats import library_stats
    from facecluster.store.connection import open_meta

    emit(library_stats(open_meta(settings), args.library))
    return 0


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.ingest.sources import validate_library
    from facecluster.people.erasure import erase
    from facecluster.store.connection import connect

    target = {"face": "face_id", "image": "image", "person": "person_id", "user": "user_id"}[args.what]
    library = validate_library(args.library) if args.what == "image" else None
    emit(erase(connect(settings), actor=_actor(), library=library, **{target: args.id}))
    ray.shutdown()
    return 0


def cmd_library(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.ingest.sources import validate_library
    from facecluster.store.connection import connect, open_meta

    if args.action == "list":
        emit({"libraries": open_meta(settings).libraries()})
        return 0
    import ray

    from facecluster.people.erasure import delete_library

    emit(delete_library(connect(settings), validate_library(args.library), actor=_actor()))
    ray.shutdown()
    return 0


def cmd_job(settings: Settings, args: argparse.Namespace) -> int:
    """A job the API queued: its kind's function on its options, recorded under its id."""
    import uuid

    import ray

    from facecluster.errors import Unavailable
    from facecluster.jobs import parse_options, run_job

    if args.id is not None and settings.stores.mongo_uri is None:
        raise Unavailable(
            "this job was queued by the API, but this node has no MONGO_URI: it would use a MongoDB of its own, "
            "not the API's; give the nodes MONGO_URI (or MONGO_URI_FILE) in their environment"
        )
    result = run_job(settings, args.kind, parse_options(args.kind, args.options), args.id or uuid.uuid4().hex)
    ray.shutdown()
    emit(result)
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.engine.faces import load_embedder
    from facecluster.ingest.maintenance import check_stores, repair_stores
    from facecluster.store.connection import connect

    stores = connect(settings)
    meta, vectors = stores.meta, stores.vectors
    report = check_stores(meta, vectors, args.library)
    if args.repair and not report.consistent:
        repair_stores(report, meta, vectors, load_embedder(settings), settings)
        after = check_stores(meta, vectors, args.library)
        emit({**report.to_dict(), "after": after.to_dict()})
        report = after
    else:
        emit(report.to_dict())
    ray.shutdown()
    return 0 if report.consistent else 1


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.ingest.maintenance import export_faces
    from facecluster.ingest.sources import validate_library
    from facecluster.logs import Progress
    from facecluster.store.connection import open_meta

    library = validate_library(args.library)
    with Progress(f"export faces {library}", settings.ingest.progress_interval_s) as progress:
        progress.step("writing faces")
        for record in progress.counted(export_faces(open_meta(settings), library)):
            emit(record)
    return 0


def cmd_match(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.cluster.commands import run_match
    from facecluster.store.connection import connect

    summary = run_match(
        settings, connect(settings), args.library, person_threshold=args.person_threshold, max_faces=args.max_faces
    )
    ray.shutdown()
    emit(vars(summary))
    return 0


def cmd_assign(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.jobs import AssignJob, assign_libraries, validated
    from facecluster.store.connection import connect

    values = {name: getattr(args, name) for name in ("clustering_id", "strategy", "threshold", "dry_run", "overwrite")}
    options = validated(AssignJob, {"libraries": None if args.all else args.library, **values})
    reports = assign_libraries(settings, connect(settings), options, partial(log.info, "progress: %s"))["libraries"]
    ray.shutdown()
    for report in reports:
        if "error" in report:
            log.error("library %s: %s", report["library"], report["error"])
        else:
            emit(report)
    return 1 if any("error" in report for report in reports) else 0


def _add_profile(settings: Settings, args: argparse.Namespace, store: Any) -> int:
    from facecluster.engine.analysis import ProfileRejected, analyze_uploads, profile_face
    from facecluster.engine.faces import FaceEngine
    from facecluster.engine.quality import ProfileChecks
    from facecluster.people.profiles import USER_ID_PATTERN

    if not USER_ID_PATTERN.fullmatch(args.user_id):
        log.error("invalid user id %r", args.user_id)
        return 2
    engine = FaceEngine.from_settings(settings)
    checks = ProfileChecks(
        settings.profiles.profile_min_face_size,
        settings.profiles.profile_min_confidence,
        settings.profiles.profile_blur_threshold,
    )
    code, replace = 0, args.replace
    for path in args.images:
        data = path.read_bytes()
        analysis = analyze_uploads(engine, [data])[0]
        try:
            if analysis.error_code:
                raise ProfileRejected(f"not a usable photo: {analysis.error}", {"error": analysis.error_code})
            face = profile_face(analysis, checks, engine.min_confidence)
        except ProfileRejected as exc:
            log.error("%s: %s %s", path, exc, exc.details.get("faces", ""))
            code = 1
            continue
        doc = store.enrol(args.user_id, face, data, create=not store.exists(args.user_id), replace=replace)
        replace = False
        emit({"user_id": args.user_id, "image": str(path), "face": face.public(), "faces": len(doc["faces"])})
    return code


def cmd_profiles(settings: Settings, args: argparse.Namespace) -> int:
    import ray

    from facecluster.people.profiles import ProfileStore, public
    from facecluster.store.connection import connect

    stores = connect(settings)
    store = ProfileStore(stores.meta, stores.profiles, stores.space)
    code = 0
    if args.action == "list":
        for doc in store.page(0, 10**9):
            emit(public(doc))
    elif args.action == "delete":
        from facecluster.people.erasure import erase

        if store.exists(args.user_id):
            erased = erase(stores, actor=_actor(), user_id=args.user_id)
            emit({"user_id": args.user_id, "assignments_deleted": erased["mongodb"].get("assignments", 0)})
        else:
            log.error("user %s has no profile", args.user_id)
            code = 1
    else:
        code = _add_profile(settings, args, store)
    ray.shutdown()
    return code


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading

    from ray import serve

    from facecluster.api.serving import run

    host, port = args.host or settings.serve.serve_host, args.port or settings.serve.serve_port
    try:  # the replicas learn where they are bound (their Host check depends on it)
        run(settings.updated(serve_host=host, serve_port=port), host, port, blocking=False)
    except PermissionError as exc:
        log.error("%s", exc)
        return 2
    log.info("facecluster API on http://%s:%d (docs at /docs); Ctrl-C or SIGTERM stops it", host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.engine.faces import FaceEngine
    from facecluster.eval.accuracy import detection_recall, enrolment_separation, report_dict
    from facecluster.eval.verification import verify

    if args.action in ("cluster", "train"):
        import ray

        from facecluster.eval.accuracy import evaluate_clustering, evaluate_training

        if args.action == "cluster":
            reports = list(evaluate_clustering(settings, args.images, limit=args.limit))
        else:
            reports = list(
                evaluate_training(
                    settings,
                    args.images,
                    min_images=args.min_images,
                    persons=args.persons,
                    epochs=args.epochs,
                    margin=args.margin,
                    min_faces=args.min_faces,
                )
            )
        ray.shutdown()
        for report in reports:
            emit(report)
        return 0
    engine = FaceEngine.from_settings(settings)
    if args.action == "verify":
        emit(verify(engine, args.images, args.pairs).to_dict())
    elif args.action == "detect":
        emit(report_dict(detection_recall(engine, args.images, args.boxes, iou=args.iou)))
    else:
        emit(report_dict(enrolment_separation(engine, args.images)))
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from facecluster.eval.bench import bench_cluster, bench_engine, bench_ingest

    if args.action == "cluster":
        emit(bench_cluster(settings, args.images, args.sizes, method=args.method))
        return 0
    if args.action == "serve":
        from facecluster.eval.bench_serve import bench_serve

        emit(bench_serve(settings, args.images, clients=args.clients, seconds=args.seconds))
        return 0
    if args.action == "tiling":
        from facecluster.eval.bench_tiling import bench_tiling

        emit(bench_tiling(settings, args.photos, args.tiles))
        return 0
    if args.action == "listing":
        from facecluster.eval.bench_listing import bench_listing

        emit(bench_listing(settings, args.sizes))
        return 0
    if args.action == "incremental":
        from facecluster.eval.bench_incremental import bench_incremental

        emit(
            bench_incremental(
                settings, args.images, faces=args.faces, initial=args.initial, increments=args.increments,
                pool=args.pool, match=not args.no_match,
            )
        )  # fmt: skip
        return 0
    if args.action == "sharded":
        from facecluster.eval.bench_sharded import bench_sharded

        emit(bench_sharded(settings, args.images, args.faces, args.shards))
        return 0
    if args.action == "scale":
        from facecluster.eval.bench_scale import bench_scale

        emit(bench_scale(settings, args.images, args.faces, clients=args.clients, search_s=args.search_seconds))
        return 0
    if args.action == "engine":
        emit(bench_engine(settings, images=args.images, batch_sizes=args.batch_sizes, repeats=args.repeats))
        return 0
    import ray

    report = bench_ingest(settings, args.source, limit=args.limit, runs=args.runs)
    ray.shutdown()
    emit(report)
    return 0


def embedded_services(settings: Settings, *, stop: bool = False) -> dict[str, object]:
    """What runs for the data directory (its Ray head, its MongoDB-wire server) and where the configured
    stores are; with `stop`, the embedded services are stopped first."""
    from facecluster.deployment import stop_embedded
    from facecluster.runtime import head_status
    from facecluster.store.embedded import embedded_status, local_vectors_path
    from facecluster.store.mongo import mongo_hosts

    data_dir = settings.general.data_dir
    if stop:
        return {"data_dir": str(data_dir), "stopped": stop_embedded(data_dir)}
    configured = settings.stores.mongo_uri
    return {
        "data_dir": str(data_dir),
        "mongodb": mongo_hosts(configured.get_secret_value()) if configured else "embedded",
        "qdrant": settings.stores.qdrant_url or f"embedded Qdrant Edge ({local_vectors_path(settings)})",
        "ray": os.environ.get("RAY_ADDRESS") or "embedded",
        "embedded_ray": head_status(data_dir),
        "embedded_mongodb": embedded_status(data_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from facecluster.errors import FaceclusterError

    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except FaceclusterError as exc:
        configure_logging("INFO")
        log.error("%s", exc)
        return exc.exit_code
    configure_logging(settings.general.log_level)
    if args.command == "config":
        if args.action == "check":
            from facecluster.cli.config_check import config_check

            report = config_check(settings, args.source)
            emit(report)
            return 0 if report["ok"] else 2
        emit(settings.masked())
        return 0
    if args.command in ("status", "stop"):
        emit(embedded_services(settings, stop=args.command == "stop"))
        return 0
    if args.command == "openapi":
        from facecluster.api import create_app

        sys.stdout.write(json.dumps(create_app(settings).openapi(), indent=2) + "\n")
        return 0
    handlers = {
        "models": cmd_models,
        "detect": cmd_detect,
        "ingest": cmd_ingest,
        "pipeline": cmd_ingest,
        "cluster": cmd_cluster,
        "stats": cmd_stats,
        "check": cmd_check,
        "export": cmd_export,
        "eval": cmd_eval,
        "bench": cmd_bench,
        "match": cmd_match,
        "assign": cmd_assign,
        "profiles": cmd_profiles,
        "serve": cmd_serve,
        "train": cmd_train,
        "job": cmd_job,
        "erase": cmd_erase,
        "library": cmd_library,
    }
    try:
        return handlers[args.command](settings, args)
    except FaceclusterError as exc:
        log.error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
