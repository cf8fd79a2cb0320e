"""The Ray Data ingest on real photos into the embedded stores: faults, idempotence, check, S3."""

from __future__ import annotations

import io
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from facecluster.engine.faces import load_embedder
from facecluster.ingest.maintenance import check_stores, export_faces, repair_stores
from facecluster.ingest.pipeline import IngestSummary, run_ingest
from facecluster.settings import Settings
from facecluster.store.connection import connect, open_meta
from facecluster.store.meta import MetaStore
from facecluster.store.vectors import Vectors

pytestmark = pytest.mark.usefixtures("ray_cluster")

EXPECTED_ERRORS = {
    "empty.jpg": "empty",
    "truncated.jpg": "truncated",
    "notes.jpg": "not_an_image",
    "bomb.png": "too_many_pixels",
    "oversized.jpg": "too_large",
}


def faulty_folder(photos_dir: Path, root: Path) -> Path:
    """Three real photos (10 faces), one photo without a face, and one file of each bad kind."""
    folder = root / "event"
    folder.mkdir()
    group = photos_dir / "group"
    shutil.copy(group / "insightface_t1.jpg", folder / "t1.jpg")  # 6 faces
    shutil.copy(group / "face_recognition_two_people.jpg", folder / "two.jpg")  # 2 faces
    shutil.copy(group / "dlib_voc_2008_001009.jpg", folder / "voc.jpg")  # 2 faces
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    Image.fromarray(gradient).convert("RGB").save(folder / "wall.jpg")  # no face
    (folder / "empty.jpg").write_bytes(b"")
    data = (group / "face_recognition_two_people.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("meeting notes, not a photo\n")
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buffer, format="PNG")  # 36 megapixels in a small file
    (folder / "bomb.png").write_bytes(buffer.getvalue())
    shutil.copy(group / "deepface_couple.jpg", folder / "oversized.jpg")  # 944,694 bytes
    (folder / "readme.txt").write_text("not listed: not an image name")
    return folder


@pytest.fixture
def fault_settings(store_settings: Settings) -> Settings:
    return store_settings.updated(max_image_bytes=900_000, max_image_pixels=20_000_000)


@pytest.fixture
def stores(fault_settings: Settings) -> Iterator[tuple[MetaStore, Vectors]]:
    connection = connect(fault_settings)
    yield connection.meta, connection.vectors
    connection.meta.close()


def test_ingest_records_every_photo_and_every_face(
    fault_settings: Settings, photos_dir: Path, tmp_path: Path, stores: tuple[MetaStore, Vectors]
) -> None:
    folder = faulty_folder(photos_dir, tmp_path)
    summary = run_ingest(fault_settings, str(folder))
    meta, vectors = stores
    assert summary.library == "event"
    assert (summary.images, summary.faces, summary.no_face, summary.failed, summary.skipped) == (9, 10, 1, 5, 0)
    images = {doc["key"]: doc for doc in meta.db.images.find({"library": "event"})}
    assert len(images) == 9
    with_faces = [k for k, d in images.items() if d["status"] == "done"]
    assert sorted(with_faces) == ["t1.jpg", "two.jpg", "voc.jpg"]
    assert summary.images == len(with_faces) + summary.no_face + summary.failed + summary.skipped
    for key, code in EXPECTED_ERRORS.items():
        assert images[key]["status"] == "error" and images[key]["error_code"] == code, key
        assert images[key]["error"]
    assert images["wall.jpg"]["status"] == "no_face" and images["wall.jpg"]["faces"] == 0
    # Every face of a multi-face photo is stored, in both stores.
    faces = list(meta.db.faces.find({"library": "event"}))
    assert len(faces) == 10 == vectors.count()
    assert sorted(f["face_index"] for f in faces if f["image"] == "t1.jpg") == [0, 1, 2, 3, 4, 5]
    assert {f["_id"] for f in faces} == vectors.ids("event")
    t1 = next(f for f in faces if f["image"] == "t1.jpg")
    assert len(t1["bbox"]) == 4 and len(t1["landmarks"]) == 5 and 0 < t1["quality"]["score"] <= 1
    assert t1["detector"].startswith("yolov5n-0.5-face@") and t1["embedder"].startswith("mobilefacenet@")
    job = meta.db.jobs.find_one({"library": "event"})
    assert job is not None and job["status"] == "succeeded" and job["result"]["faces"] == 10
    exported = list(export_faces(meta, "event"))
    assert len(exported) == 10
    # The vectors are in the data directory's Qdrant Edge shards, with a write-ahead log each.
    shards = fault_settings.general.data_dir / "vectors"
    assert (shards / vectors.config.collection / "wal").is_dir()  # type: ignore[attr-defined]
    assert not (fault_settings.general.data_dir / "qdrant").exists()
    assert set(exported[0]) == {"face_id", "image", "bbox", "score", "quality", "cluster_id", "person_id"}


def test_rerun_is_idempotent_and_force_redoes_without_duplicates(
    fault_settings: Settings, photos_dir: Path, tmp_path: Path, stores: tuple[MetaStore, Vectors]
) -> None:
    meta, vectors = stores
    folder = faulty_folder(photos_dir, tmp_path)
    run_ingest(fault_settings, str(folder))
    first = {f["_id"]: f["bbox"] for f in meta.db.faces.find()}

    again = run_ingest(fault_settings, str(folder))
    assert (again.images, again.skipped, again.faces, again.failed) == (9, 4, 0, 5)  # bad files are retried

    forced = run_ingest(fault_settings, str(folder), force=True)
    assert (forced.skipped, forced.faces) == (0, 10)
    assert {f["_id"]: f["bbox"] for f in meta.db.faces.find()} == first
    assert vectors.count() == 10

    # A changed photo gets new faces; the old version's faces leave both stores.
    shutil.copy(photos_dir / "group" / "dlib_voc_2008_001322.jpg", folder / "t1.jpg")  # 3 faces
    changed = run_ingest(fault_settings, str(folder))
    assert changed.skipped == 3 and changed.faces == 3
    faces = list(meta.db.faces.find())
    assert len(faces) == 2 + 2 + 3 == vectors.count()
    assert {f["_id"] for f in faces} == vectors.ids()


def test_limit_takes_the_first_photos(fault_settings: Settings, photos_dir: Path, tmp_path: Path) -> None:
    summary = run_ingest(fault_settings, str(faulty_folder(photos_dir, tmp_path)), library="first-three", limit=3)
    assert summary.library == "first-three" and summary.images == 3


def test_check_finds_and_repairs_missing_vectors_and_orphans(
    fault_settings: Settings, photos_dir: Path, tmp_path: Path, stores: tuple[MetaStore, Vectors]
) -> None:
    meta, vectors = stores
    run_ingest(fault_settings, str(faulty_folder(photos_dir, tmp_path)))
    assert check_stores(meta, vectors, "event").consistent

    victim = meta.db.faces.find_one({"image": "two.jpg"})
    assert victim is not None
    vectors.delete([victim["_id"]])
    orphan = "00000000-0000-0000-0000-000000000001"
    vectors.upsert([orphan], np.ones((1, 128), np.float32) / np.sqrt(128), [{"library": "event"}])
    report = check_stores(meta, vectors, "event")
    assert report.missing_vectors == [victim["_id"]] and report.orphan_points == [orphan]

    repair_stores(report, meta, vectors, load_embedder(fault_settings), fault_settings)
    after = check_stores(meta, vectors, "event")
    assert after.consistent and after.faces == after.points == 10


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto in server mode on a free loopback port: a real HTTP S3 endpoint for every Ray worker."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_source_and_manifest(store_settings: Settings, photos_dir: Path, s3_server: str, tmp_path: Path) -> None:
    settings = store_settings.updated(
        s3_endpoint_url=s3_server, s3_region="us-east-1", s3_access_key="testing", s3_secret_key="testing"
    )
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="x"
    )
    client.create_bucket(Bucket="wedding-photos")
    group = photos_dir / "group"
    for name in ("insightface_t1.jpg", "face_recognition_two_people.jpg"):
        client.put_object(Bucket="wedding-photos", Key=f"2024/ceremony/{name}", Body=(group / name).read_bytes())
    client.put_object(Bucket="wedding-photos", Key="2024/ceremony/broken.jpg", Body=b"\xff\xd8\xff garbage")
    client.put_object(Bucket="wedding-photos", Key="2024/ceremony/list.txt", Body=b"not listed")
    client.put_object(
        Bucket="wedding-photos", Key="2024/other/elsewhere.jpg", Body=(group / "insightface_t1.jpg").read_bytes()
    )

    summary = run_ingest(settings, "s3://wedding-photos/2024/ceremony/")
    assert summary.library == "wedding-photos/2024/ceremony"
    assert (summary.images, summary.faces, summary.failed) == (3, 8, 1)

    meta = open_meta(settings)
    stored = meta.images_by_key(summary.library, ["2024/ceremony/insightface_t1.jpg"])[
        "2024/ceremony/insightface_t1.jpg"
    ]
    etag = client.head_object(Bucket="wedding-photos", Key="2024/ceremony/insightface_t1.jpg")["ETag"].strip('"')
    assert stored["etag"] == etag and stored["uri"] == "s3://wedding-photos/2024/ceremony/insightface_t1.jpg"

    # A manifest names the objects instead of listing the bucket.
    manifest = tmp_path / "keys.csv"
    manifest.write_text(
        "uri\n"
        "s3://wedding-photos/2024/ceremony/insightface_t1.jpg\n"
        "s3://wedding-photos/2024/other/elsewhere.jpg\n"
        "s3://wedding-photos/2024/ceremony/missing.jpg\n"
    )
    from_manifest = run_ingest(settings, str(manifest), library="picked")
    assert (from_manifest.images, from_manifest.faces, from_manifest.failed) == (3, 12, 1)
    missing = meta.db.images.find_one({"library": "picked", "key": "s3://wedding-photos/2024/ceremony/missing.jpg"})
    assert missing is not None and missing["error_code"] == "read_failed"


def test_unreachable_mongodb_is_named(store_settings: Settings, photos_dir: Path) -> None:
    from facecluster.store.backoff import BackendUnavailable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = SecretStr(f"mongodb://127.0.0.1:{port}/")
    settings = store_settings.updated(mongo_uri=unreachable, store_retries=2)
    with pytest.raises(BackendUnavailable, match=r"MongoDB at 127\.0\.0\.1"):
        run_ingest(settings, str(photos_dir / "enrol" / "biden"))


def test_unreachable_qdrant_is_named(store_settings: Settings, photos_dir: Path) -> None:
    from facecluster.store.backoff import BackendUnavailable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = store_settings.updated(qdrant_url=f"http://127.0.0.1:{port}", store_retries=2)
    with pytest.raises(BackendUnavailable, match=rf"Qdrant at http://127\.0\.0\.1:{port} is unreachable after 2"):
        run_ingest(settings, str(photos_dir / "enrol" / "biden"))


def test_summary_fields() -> None:
    assert list(IngestSummary(library="x").to_dict()) == [
        "library",
        "images",
        "faces",
        "no_face",
        "failed",
        "skipped",
        "seconds",
        "images_per_s",
        "pruned_images",
        "pruned_faces",
    ]


def test_a_twelve_megapixel_photo_gives_the_faces_of_its_original(
    store_settings: Settings, photos_dir: Path, tmp_path: Path
) -> None:
    """The reduced decode and the working copy: the 12 MP version of a photo yields the same faces, with
    boxes in its own full-size pixels (the original's scaled), stored as wide and high as the file is."""
    from facecluster.eval.bench_tiling import _twelve_megapixels

    folder = tmp_path / "sizes"
    folder.mkdir()
    original = photos_dir / "group" / "insightface_t1.jpg"
    shutil.copy(original, folder / "original.jpg")
    data, factor = _twelve_megapixels(original.read_bytes())
    (folder / "twelve.jpg").write_bytes(data)
    summary = run_ingest(store_settings, str(folder), library="sizes")
    assert summary.images == 2 and summary.failed == 0
    meta = open_meta(store_settings)
    images = meta.images_by_key("sizes", ["original.jpg", "twelve.jpg"])
    with Image.open(folder / "twelve.jpg") as big:
        assert (images["twelve.jpg"]["width"], images["twelve.jpg"]["height"]) == big.size
    faces = meta.faces_in("sizes", ["image", "bbox"])
    boxes = {key: sorted(f["bbox"] for f in faces if f["image"] == key) for key in images}
    assert len(boxes["original.jpg"]) == len(boxes["twelve.jpg"]) == 6
    for small, large in zip(boxes["original.jpg"], boxes["twelve.jpg"], strict=True):
        assert np.allclose(np.array(small) * factor, large, atol=0.06 * large[2]), (small, large)
    meta.close()
