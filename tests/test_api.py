"""The HTTP API through the FastAPI app: real engine, real stores (nx-27017, Qdrant local), real Ray."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from fastapi.testclient import TestClient

from facecluster.api import create_app
from facecluster.api.engineclient import LocalEngine
from facecluster.api.jobs import JobRunner
from facecluster.api.services import Services
from facecluster.cluster.commands import run_cluster
from facecluster.engine.faces import FaceEngine
from facecluster.ingest.pipeline import run_ingest
from facecluster.settings import Settings
from facecluster.store.connection import connect

from .conftest import started_head, stop_embedded

LIBRARY = "my-bucket/my-sub"
PEOPLE = ("obama", "biden", "kit_harington", "rose_leslie")


@pytest.fixture(scope="module")
def api_settings(settings: Settings, photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A library `my-bucket/my-sub` of the enrolment photos, ingested and clustered."""
    root = tmp_path_factory.mktemp("libraries")
    folder = root / "my-bucket" / "my-sub"
    for person in PEOPLE:
        shutil.copytree(photos_dir / "enrol" / person, folder / person)
    data = tmp_path_factory.mktemp("api-data")
    yield settings.updated(
        data_dir=data,
        library_root=root,
        write_batch_size=4,
        unknown_min_cluster_size=2,
        allowed_hosts=["testserver", "localhost"],  # the test clients' Host
    )
    stop_embedded(data)


@pytest.fixture(scope="module")
def services(api_settings: Settings, engine: FaceEngine, ray_cluster: None) -> Services:
    run_ingest(api_settings, str(api_settings.general.library_root / "my-bucket" / "my-sub"), library=LIBRARY)
    run_cluster(api_settings, LIBRARY)
    return Services(api_settings, connect(api_settings), LocalEngine(engine), JobRunner(api_settings))


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, services)) as test_client:
        yield test_client


def upload(path: Path) -> dict[str, Any]:
    return {"file": (path.name, path.read_bytes(), "image/jpeg")}


def enrol(client: TestClient, photos_dir: Path, user: str, photo: str, **form: Any) -> Any:
    return client.post("/detect-face", data={"user_id": user, **form}, files=upload(photos_dir / "enrol" / photo))


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"mongodb", "qdrant", "ray"}


def test_profiles_are_created_once_updated_and_deleted(client: TestClient, photos_dir: Path) -> None:
    created = enrol(
        client, photos_dir, "test.user@demo", "obama/obama.jpg", min_face_size=30, min_confidence=0.4, blur_threshold=50
    )
    assert created.status_code == 201, created.text
    assert created.json()["faces"] == 1
    again = enrol(client, photos_dir, "test.user@demo", "obama/obama2.jpg")
    assert again.status_code == 409
    updated = client.put("/update-face/test.user@demo", files=upload(photos_dir / "enrol" / "obama" / "obama2.jpg"))
    assert updated.status_code == 200 and updated.json()["faces"] == 2
    unknown = client.put("/update-face/nobody", files=upload(photos_dir / "enrol" / "obama" / "obama2.jpg"))
    assert unknown.status_code == 404
    profile = client.get("/debug-profile/test.user@demo").json()
    assert len(profile["faces"]) == 2 and "embedding" not in profile["faces"][0]
    assert "test.user@demo" in [p["user_id"] for p in client.get("/debug-profiles").json()["profiles"]]
    assert client.delete("/debug-profile/test.user@demo").json()["deleted"] is True
    assert client.get("/debug-profile/test.user@demo").status_code == 404


def test_a_photo_that_fails_the_checks_is_a_422_that_says_why(client: TestClient, photos_dir: Path) -> None:
    group = client.post(
        "/detect-face",
        data={"user_id": "group"},
        files=upload(photos_dir / "group" / "face_recognition_obama_and_biden.jpg"),
    )
    assert group.status_code == 422
    assert group.json()["detail"]["faces_passing"] >= 2
    assert "exactly one" in group.json()["detail"]["message"]
    blurry = enrol(
        client,
        photos_dir,
        "sharp",
        "biden/" + sorted(p.name for p in (photos_dir / "enrol" / "biden").iterdir())[0],
        blur_threshold=100000,
    )
    assert blurry.status_code == 422
    assert "blur_threshold" in blurry.json()["detail"]["faces"][0]["failures"][0]
    broken = client.post(
        "/detect-face", data={"user_id": "x"}, files={"file": ("a.jpg", b"not an image", "image/jpeg")}
    )
    assert broken.status_code == 422 and "error" in broken.json()["detail"]
    bad_id = client.post(
        "/detect-face", data={"user_id": "../etc"}, files=upload(photos_dir / "enrol" / "obama" / "obama.jpg")
    )
    assert bad_id.status_code == 422
    settings = client.get("/debug-quality-settings").json()
    assert settings["min_face_size"] == 30 and settings["blur_threshold"] == 50.0


def _clusters(client: TestClient) -> list[dict[str, Any]]:
    listed = client.get("/api/v1/faces/clusters", params={"library": LIBRARY}).json()
    sizes = [c["size"] for c in listed["clusters"]]
    assert sizes == sorted(sizes, reverse=True)
    return list(listed["clusters"])


def _person_of_cluster(client: TestClient, cluster_id: str) -> str:
    """The folder (person) that every face of the cluster comes from."""
    details = client.get(f"/person-details/my-bucket/my-sub/{cluster_id}").json()
    folders = {face["image"].split("/")[0] for face in details["appearances"]}
    assert len(folders) == 1, folders
    return folders.pop()


@pytest.mark.parametrize("strategy", ["centroid", "vote"])
def test_assignment_names_every_cluster_by_its_profile(client: TestClient, photos_dir: Path, strategy: str) -> None:
    for person in PEOPLE:
        photo = sorted((photos_dir / "enrol" / person).iterdir())[0]
        if client.get(f"/debug-profile/{person}").status_code == 404:
            assert enrol(client, photos_dir, person, f"{person}/{photo.name}").status_code == 201
    clusters = _clusters(client)
    assert len(clusters) == len(PEOPLE)
    status = client.get("/person-cluster-status/my-bucket/my-sub").json()
    clustering_id = status["runs"][0]["clustering_id"]
    dry = client.post(f"/assignments/my-bucket/my-sub?clustering_id={clustering_id}&strategy={strategy}&dry_run=true")
    assert dry.status_code == 200 and dry.json()["assigned"] == len(PEOPLE)
    assert client.get("/assignments/my-bucket/my-sub").json()["total"] == 0  # a dry run stores nothing
    report = client.post(f"/assignments/my-bucket/my-sub?clustering_id={clustering_id}&strategy={strategy}").json()
    assert report["assigned"] == len(PEOPLE)
    for decision in report["decisions"]:
        assert decision["user_id"] == _person_of_cluster(client, decision["cluster_id"])
        if strategy == "vote":  # every face voted for the winner: no runner-up, full margin
            assert decision["share"] == 1.0 and decision["margin"] == 1.0
        else:
            assert decision["runner_up"] not in (None, decision["user_id"]) and decision["margin"] > 0.1
    kept = client.post(f"/assignments/my-bucket/my-sub?strategy={strategy}").json()
    assert kept["kept"] == len(PEOPLE) and kept["assigned"] == 0  # overwrite=false keeps them
    listed = client.get(f"/assignments/my-bucket/my-sub?clustering_id={clustering_id}").json()
    assert listed["total"] == len(PEOPLE)
    by_user = client.get("/assignments/user/obama").json()
    assert by_user["total"] == 1 and by_user["runs"][0]["clustering_id"] == clustering_id
    # The seed's unreachable debug routes are reachable.
    assert LIBRARY in client.get("/assignments/debug/collections").json()["libraries"]
    assert client.get("/assignments/debug/collection/assignments").json()["count"] == len(PEOPLE)
    assert client.get("/assignments/debug/collection/system.users").status_code == 422
    assert client.get("/assignments/debug/test-db-connection").json()["ready"] is True
    missing = client.post("/assignments/my-bucket/my-sub?clustering_id=run_000000000000")
    assert missing.status_code == 404
    assert client.delete(f"/assignments/clustering/{clustering_id}").json()["deleted"] == len(PEOPLE)


def test_deleting_a_profile_removes_its_assignments(client: TestClient, photos_dir: Path) -> None:
    photo = sorted((photos_dir / "enrol" / "biden").iterdir())[0]
    client.delete("/debug-profile/biden")
    assert enrol(client, photos_dir, "biden", f"biden/{photo.name}").status_code == 201
    client.post("/assignments/my-bucket/my-sub?overwrite=true")
    assert client.get("/assignments/user/biden").json()["total"] == 1
    assert client.delete("/debug-profile/biden").json()["assignments_deleted"] == 1
    assert client.get("/assignments/user/biden").json()["total"] == 0


def test_label_merge_move_reject_and_undo(client: TestClient) -> None:
    headers = {"X-Actor": "reviewer"}
    first, second = _clusters(client)[:2]
    labelled = client.post(
        f"/api/v1/faces/clusters/{first['cluster_id']}/label", json={"name": "Alice"}, headers=headers
    ).json()
    alice = labelled["person_id"]
    assert labelled["faces"] == first["size"]
    assert first["cluster_id"] not in [c["cluster_id"] for c in _clusters(client)]  # not listed twice
    bob = client.post(f"/api/v1/faces/clusters/{second['cluster_id']}/label", json={"name": "Bob"}).json()["person_id"]
    persons = client.get("/api/v1/faces/persons", params={"library": LIBRARY}).json()["persons"]
    assert {p["name"] for p in persons} >= {"Alice", "Bob"}
    assert client.post("/api/v1/faces/persons", json={"name": "Alice", "library": LIBRARY}).status_code == 409
    assert client.patch(f"/api/v1/faces/persons/{bob}", json={"name": "Robert"}).json()["name"] == "Robert"

    photos = client.get(f"/api/v1/faces/persons/{alice}/photos").json()
    face_ids = [f["face_id"] for p in photos["photos"] for f in p["faces"]]
    moved = client.post(
        f"/api/v1/faces/persons/{alice}/faces/move", json={"face_ids": face_ids[:1], "new_name": "Carol"}
    )
    assert moved.status_code == 200, moved.text
    carol = moved.json()["to"]
    rejected = client.post(f"/api/v1/faces/faces/{face_ids[0]}/not-person", json={"person_id": carol}).json()
    assert rejected["rejected_persons"] == [carol]
    assert client.post(f"/api/v1/faces/faces/{face_ids[0]}/assign", json={"person_id": alice}).status_code == 200
    merged = client.post(f"/api/v1/faces/persons/{bob}/merge", json={"into_person_id": alice}).json()
    assert merged["faces_moved"] == second["size"]
    assert client.post(f"/api/v1/faces/persons/{bob}/merge", json={"into_person_id": alice}).status_code == 409

    audit = client.get("/api/v1/faces/audit", params={"library": LIBRARY}).json()["entries"]
    assert audit[0]["action"] == "merge_persons" and audit[1]["action"] == "assign_face"
    requests = [e for e in audit if e["undone_by"] == "not undoable"]  # changes audited by their request
    assert all(e["action"].split()[0] in ("POST", "PUT", "PATCH", "DELETE") for e in requests), requests
    assert [e for e in audit if e not in requests][-1]["actor"] == "reviewer"
    # Undo the merge: Bob's faces are his again and he can take faces.
    undone = client.post(f"/api/v1/faces/audit/{audit[0]['audit_id']}/undo")
    assert undone.status_code == 200, undone.text
    assert client.get(f"/person-details/my-bucket/my-sub/{bob}").json()["faces"] == second["size"]
    assert client.post(f"/api/v1/faces/audit/{audit[0]['audit_id']}/undo").status_code == 409
    # An older change whose faces changed since cannot be undone silently.
    label_entry = next(e for e in audit if e["action"] == "label_cluster" and e["target"] == first["cluster_id"])
    assert client.post(f"/api/v1/faces/audit/{label_entry['audit_id']}/undo").status_code == 409
    # Undoing the creation of a person that later changes gave faces is refused, naming the reason.
    dora = client.post("/api/v1/faces/persons", json={"name": "Dora", "library": LIBRARY}).json()["person_id"]
    created = client.get("/api/v1/faces/audit", params={"library": LIBRARY}).json()["entries"][0]
    assert created["action"] == "create_person" and created["target"] == dora
    assert client.post(f"/api/v1/faces/faces/{face_ids[0]}/assign", json={"person_id": dora}).status_code == 200
    refused = client.post(f"/api/v1/faces/audit/{created['audit_id']}/undo")
    assert refused.status_code == 409 and "faces from later changes" in refused.json()["detail"]
    assert client.post(f"/api/v1/faces/faces/{face_ids[0]}/assign", json={"person_id": alice}).status_code == 200

    removed = client.post(
        f"/api/v1/faces/persons/{bob}/faces/remove",
        json={
            "face_ids": [
                f["face_id"]
                for p in client.get(f"/api/v1/faces/persons/{bob}/photos").json()["photos"]
                for f in p["faces"]
            ]
        },
    )
    assert removed.json()["removed"] == second["size"]
    # Incremental assignment never gives the removed faces back to Bob.
    matched = client.post("/api/v1/faces/assign", json={"library": LIBRARY}).json()
    assert matched["considered"] >= second["size"]
    assert client.get(f"/person-details/my-bucket/my-sub/{bob}").status_code == 404


def test_review_reads_thumbnails_faces_stats_and_hides(client: TestClient) -> None:
    import cv2
    import numpy as np

    assert client.get("/api/v1/faces/libraries").json() == {"libraries": [LIBRARY]}
    page = client.get("/ui")
    assert page.status_code == 200 and "facecluster review" in page.text
    cluster = _clusters(client)[0]
    thumb = client.get(f"/api/v1/faces/faces/{cluster['owner_face_id']}/thumbnail", params={"size": 64})
    assert thumb.headers["content-type"] == "image/jpeg" and "immutable" in thumb.headers["cache-control"]
    pixels = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 20  # a face, not a grey square
    assert client.get("/api/v1/faces/faces/00000000-0000-0000-0000-000000000000/thumbnail").status_code == 404
    assert client.get(f"/api/v1/faces/faces/{cluster['owner_face_id']}/thumbnail?size=96").status_code == 422

    stats = client.get("/api/v1/faces/stats", params={"library": LIBRARY}).json()
    similarity = stats["centroid_similarity"]
    assert (
        len(similarity["bins"]) == len(similarity["counts"]) == 20 and sum(similarity["counts"]) == similarity["faces"]
    )
    assert similarity["faces"] > 0 and sum(similarity["counts"][10:]) == similarity["faces"]  # all above 0.5
    assert stats["latest_run"]["run_id"].startswith("run_")

    person = client.post("/api/v1/faces/persons", json={"name": "Hidden Harry", "library": LIBRARY}).json()
    pid = person["person_id"]
    assert client.patch(f"/api/v1/faces/persons/{pid}", json={"hidden": True}).json()["hidden"] is True
    listed = client.get("/api/v1/faces/persons", params={"library": LIBRARY}).json()["persons"]
    assert pid not in [p["person_id"] for p in listed]
    shown = client.get("/api/v1/faces/persons", params={"library": LIBRARY, "hidden": True}).json()["persons"]
    assert pid in [p["person_id"] for p in shown]
    assert client.patch(f"/api/v1/faces/persons/{pid}", json={}).status_code == 422
    assert client.get(f"/api/v1/faces/persons/{pid}/faces").json() == {
        "person_id": pid, "library": LIBRARY, "total": 0, "faces": []
    }  # fmt: skip


def test_split_and_cluster_dual_inline(client: TestClient) -> None:
    ran = client.post("/api/v1/faces/cluster/dual", json={"library": LIBRARY, "person_threshold": 0.4, "queue": False})
    assert ran.status_code == 200, ran.text
    assert ran.json()["persons"] >= 1
    # Incrementally, after a full run that left nothing pending: a run that finds no new faces.
    again = client.post("/api/v1/faces/cluster/dual", json={"library": LIBRARY, "incremental": True, "queue": False})
    assert again.status_code == 200, again.text
    assert again.json()["incremental"] and again.json()["new_faces"] == 0 and again.json()["merged"] == 0
    cluster = _clusters(client)[0]
    split = client.post(
        f"/api/v1/faces/clusters/{cluster['cluster_id']}/split", json={"threshold": 0.99, "min_cluster_size": 2}
    )
    assert split.status_code == 200, split.text
    assert split.json()["unclustered"] == cluster["size"]  # nothing is that similar: every face unclustered
    assert client.get(f"/api/v1/faces/clusters/{cluster['cluster_id']}").status_code == 404


def test_search_finds_the_person_and_the_profile(client: TestClient, services: Services, photos_dir: Path) -> None:
    photo = sorted((photos_dir / "enrol" / "kit_harington").iterdir())[-1]
    found = client.post("/api/v1/faces/search", files=upload(photo), data={"library": LIBRARY, "limit": 5}).json()
    assert len(found["faces"]) == 1
    face = found["faces"][0]
    assert face["faces"][0]["similarity"] > 0.99  # the photo itself is in the library
    assert all(hit["image"].startswith("kit_harington/") for hit in face["faces"][:2])
    assert face["profiles"][0]["user_id"] == "kit_harington"
    # The hits' clusters and persons are MongoDB's (the vectors hold no labels).
    stored = {f["_id"]: f for f in services.meta.faces_by_id([hit["face_id"] for hit in face["faces"]])}
    assert any(hit["cluster_id"] or hit["person_id"] for hit in face["faces"])
    for hit in face["faces"]:
        assert (hit["cluster_id"], hit["person_id"]) == (
            stored[hit["face_id"]].get("cluster_id"),
            stored[hit["face_id"]].get("person_id"),
        )


def test_one_clustering_run_per_library_at_a_time(client: TestClient, services: Services) -> None:
    from facecluster.store.meta import Busy

    meta = services.meta
    with meta.locked(f"changes to {LIBRARY}", "elsewhere:1", ttl_s=60):
        with pytest.raises(Busy, match="held by elsewhere:1"), meta.locked(f"changes to {LIBRARY}", "me:2", 60):
            pass
        busy = client.post("/api/v1/faces/cluster/dual", json={"library": LIBRARY, "queue": False})
        assert busy.status_code == 409 and "in progress: held by elsewhere:1" in busy.json()["detail"]
        # Human changes wait for the library too: a clustering run cannot undo them half-way.
        person = client.post("/api/v1/faces/persons", json={"name": "Eve", "library": LIBRARY})
        assert person.status_code == 409 and "held by elsewhere:1" in person.json()["detail"]
        assert client.post("/api/v1/faces/assign", json={"library": LIBRARY}).status_code == 409
    # A crashed holder's lock lapses and is taken over; a finished run releases its own.
    with meta.locked(f"changes to {LIBRARY}", "crashed:3", ttl_s=0.001):
        time.sleep(0.01)
        with meta.locked(f"changes to {LIBRARY}", "me:4", ttl_s=60):
            assert meta.db.locks.find_one({"_id": f"changes to {LIBRARY}"})["holder"] == "me:4"
    assert meta.db.locks.count_documents({}) == 0
    assert client.post("/api/v1/faces/cluster/dual", json={"library": LIBRARY, "queue": False}).status_code == 200


def test_training_without_enough_labels_is_a_409_that_says_so(client: TestClient) -> None:
    refused = client.post("/api/v1/faces/train", json={"epochs": 2, "margin": 0.2, "queue": False})
    assert refused.status_code == 409
    assert "at least 4 labelled persons with 5 or more faces" in refused.json()["detail"]
    assert client.post("/api/v1/faces/train", json={"epochs": 0}).status_code == 422
    versions = client.get("/api/v1/faces/versions").json()
    assert versions["active"] == versions["base"] and versions["versions"] == []


def test_bad_requests_are_4xx_that_say_what_is_wrong(client: TestClient) -> None:
    assert client.get("/person-details/my-bucket/my-sub/not-an-id").status_code == 422
    assert client.get("/person-cluster-status/my..bucket/x").status_code in (404, 422)
    assert client.post("/api/v1/faces/clusters/clu_abc123def456/label", json={"name": "Alice"}).status_code == 404
    assert client.post("/api/v1/faces/clusters/clu_abc123def456/label", json={"name": ""}).status_code == 422
    assert client.get("/api/v1/faces/persons").status_code == 200  # one library: it is the default
    too_big = client.post(
        "/detect-face", data={"user_id": "x"}, files={"file": ("a.jpg", b"0" * 25_000_000, "image/jpeg")}
    )
    assert too_big.status_code == 413


def test_with_keys_every_route_but_the_public_ones_needs_a_key_of_enough_scope(services: Services) -> None:
    """Walks the OpenAPI spec itself, so a new route cannot slip through: 401 without a key, 403 when the
    key's scope is too small. Only reads are sent with a key allowed to make them."""
    from pydantic import SecretStr

    from facecluster.api.security import PUBLIC, required_access
    from facecluster.api.serving import check_bind

    keys = [SecretStr("viewer:r3ad:read"), SecretStr("ops:wr1te"), SecretStr("root:adm1n:admin")]
    keyed = services.settings.updated(api_keys=keys)
    app = create_app(keyed, services)
    operations = [(m.upper(), path) for path, item in app.openapi()["paths"].items() for m in item]
    assert len(operations) > 40
    with TestClient(app) as client:
        for method, template in operations:
            path = template.replace("{library}", "b/s").replace("{bucket}", "b").replace("{sub}", "s")
            path = path.replace("{", "").replace("}", "")  # other parameters: their names, as values
            needed = required_access(method, template)
            if template in PUBLIC:
                assert needed is None
                continue
            assert client.request(method, path).status_code == 401, (method, template)
            assert client.request(method, path, headers={"X-API-Key": "wrong"}).status_code == 401
            if needed != "read":
                assert client.request(method, path, headers={"X-API-Key": "r3ad"}).status_code == 403, (method, path)
            if needed == "admin":
                assert client.request(method, path, headers={"X-API-Key": "wr1te"}).status_code == 403
            if needed == "read":
                assert client.get(path, headers={"X-API-Key": "r3ad"}).status_code not in (401, 403), path
        assert client.get("/health").status_code == 200 and client.get("/openapi.json").status_code == 200
        assert client.get("/ui").status_code == 200  # the page's shell; its reads need the key
        assert client.get("/debug-profiles", headers={"X-API-Key": "adm1n"}).status_code == 200
        # The audit names the key, and X-Actor whom it acts for.
        made = client.post(
            "/api/v1/faces/persons",
            json={"name": "Keyholder", "library": LIBRARY},
            headers={"X-API-Key": "wr1te", "X-Actor": "alice@example.com"},
        )
        assert made.status_code == 201, made.text
        entry = client.get("/api/v1/faces/audit", params={"library": LIBRARY}, headers={"X-API-Key": "r3ad"})
        assert entry.json()["entries"][0]["actor"] == "ops for alice@example.com"
        # Changes that do not audit themselves in detail get a request entry: who, what, where.
        admin = {"X-API-Key": "adm1n"}
        dry = client.delete("/cleanup-person-data/my-bucket/my-sub", params={"dry_run": "true"}, headers=admin)
        assert dry.status_code == 200, dry.text
        every = client.get("/api/v1/audit", headers={"X-API-Key": "r3ad"}).json()
        latest = every["entries"][0]
        assert every["total"] >= 2 and latest["actor"] == "root" and latest["library"] == LIBRARY
        assert latest["action"] == "DELETE /cleanup-person-data/{bucket}/{sub}" and latest["undone_by"]
        assert client.delete("/debug-profile/nobody", headers=admin).status_code == 404
        assert client.get("/api/v1/audit", headers=admin).json()["total"] == every["total"]  # failures: none
    with pytest.raises(PermissionError):
        check_bind(services.settings, "0.0.0.0")
    check_bind(keyed, "0.0.0.0")
    check_bind(services.settings, "127.0.0.1")


@pytest.mark.parametrize("keys", ["off", "valid key", "no key"])
def test_openapi_fuzzing_finds_no_server_error(services: Services, keys: str) -> None:
    """Every operation of the OpenAPI spec with generated input, with keys off, with a valid (admin) key
    and without one: 4xx for bad input, never a 5xx but the documented 503 when Ray's job API is not there
    (this test's Ray has no dashboard); without a key, nothing but the public routes answers."""
    import schemathesis
    from pydantic import SecretStr

    from facecluster.api.security import PUBLIC

    settings = (
        services.settings if keys == "off" else services.settings.updated(api_keys=[SecretStr("root:adm1n:admin")])
    )
    headers = {"X-API-Key": "adm1n"} if keys == "valid key" else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, services))
    failures: list[tuple[str, str, int, str]] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:

        @hypothesis.given(operation.as_strategy())
        @hypothesis.settings(
            max_examples=10 if keys != "no key" else 2,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call(headers=headers)
            documented = response.status_code == 503 and "job API" in response.text
            if response.status_code >= 500 and not documented:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))
            if keys == "no key" and case.operation.path not in PUBLIC and response.status_code != 401:
                failures.append((case.method, case.formatted_path, response.status_code, "answered without a key"))

        call()
    assert not failures, failures[:5]


def test_jobs_on_a_token_protected_head_take_rays_token(
    client: TestClient, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dashboard that needs Ray's token this process does not have is a 503 that names it and the
    setting to fix; with the token where Ray documents it, the job is queued and its state read."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    job_data = tmp_path / "job-data"  # what the queued job would open: not this module's stores
    with started_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)) as head:
        settings = services.settings.updated(ray_dashboard_url=head.dashboard, data_dir=job_data)
        app = create_app(settings, dataclasses.replace(services, settings=settings, jobs=JobRunner(settings)))
        with TestClient(app) as guarded:
            refused = guarded.post("/cluster-bucket-persons/my-bucket/my-sub")
            assert refused.status_code == 503, refused.text
            detail = refused.json()["detail"]
            assert head.dashboard in detail and "RAY_AUTH_TOKEN" in detail and "token" in detail, detail
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        app = create_app(settings, dataclasses.replace(services, settings=settings, jobs=JobRunner(settings)))
        with TestClient(app) as given:
            queued = given.post("/cluster-bucket-persons/my-bucket/my-sub")
            assert queued.status_code == 202, queued.text
            job = given.get(queued.json()["status_url"])
            assert job.status_code == 200 and job.json()["status"] in ("PENDING", "RUNNING", "SUCCEEDED"), job.text
            stopped = given.delete(queued.json()["status_url"])
            assert stopped.status_code == 200, stopped.text
            deadline = time.monotonic() + 60
            while given.get(queued.json()["status_url"]).json()["status"] not in ("STOPPED", "FAILED", "SUCCEEDED"):
                assert time.monotonic() < deadline
                time.sleep(1)
    stop_embedded(job_data)


def test_cleanup_undoes_the_run_erasure_and_library_deletion_remove_data(
    client: TestClient, services: Services
) -> None:
    before = services.stores.vectors.ids(LIBRARY)
    assert before
    run_cluster(services.settings, LIBRARY)  # the latest run is a clustering (fuzzing may have run others)
    cleaned = client.delete("/cleanup-person-data/my-bucket/my-sub?dry_run=true")
    assert cleaned.status_code == 200 and cleaned.json()["dry_run"] is True, cleaned.text
    cleaned = client.delete("/cleanup-person-data/my-bucket/my-sub").json()
    assert cleaned["removed"]["clusters"] >= 1
    assert services.stores.vectors.ids(LIBRARY) == before  # ingested faces stay
    assert client.get("/api/v1/faces/clusters", params={"library": LIBRARY}).json()["total"] == 0

    assert client.post("/api/v1/erasure", json={"face_id": None}).status_code == 422
    assert client.post("/api/v1/erasure", json={"image": "x.jpg"}).status_code == 422  # without its library
    assert client.post("/api/v1/erasure", json={"user_id": "nobody"}).status_code == 404
    face = sorted(before)[0]
    assert client.get(f"/api/v1/faces/faces/{face}/thumbnail").status_code == 200
    erased = client.post("/api/v1/erasure", json={"face_id": face})
    assert erased.status_code == 200 and erased.json()["mongodb"]["faces"] == 1, erased.text
    assert client.get(f"/api/v1/faces/faces/{face}/thumbnail").status_code == 404
    assert face not in services.stores.vectors.ids(LIBRARY)

    deleted = client.delete(f"/api/v1/libraries/{LIBRARY}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["mongodb"]["faces"] == len(before) - 1
    assert services.stores.vectors.ids(LIBRARY) == set()
    assert client.get("/person-cluster-status/my-bucket/my-sub").json()["runs"] == []
