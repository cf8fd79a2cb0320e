"""Nothing a person did is lost: names and "not this person" survive a detector change, touched files, a
failed read, limited clustering runs and incremental matching; erasure reaches every copy and stays;
cleanup undoes one run and nothing else. On the real stores, models and Ray."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from facecluster.cluster.commands import run_cluster, run_match
from facecluster.errors import Conflict, InvalidInput, NotFound
from facecluster.ingest.maintenance import check_stores
from facecluster.ingest.pipeline import run_ingest
from facecluster.ingest.relabel import box_iou
from facecluster.people.curation import Curator
from facecluster.people.erasure import cleanup_clustering, delete_library, erase
from facecluster.settings import Settings
from facecluster.store.connection import connect
from facecluster.store.meta import MetaStore

PEOPLE = ["Colin_Powell", "Ariel_Sharon", "Hugo_Chavez"]
GROUP = ["dlib_bald_guys.jpg", "face_recognition_two_people.jpg", "dlib_voc_2008_001322.jpg"]
LIBRARY = "family"


def human_work(meta: MetaStore) -> list[tuple[str, list[float], str | None, set[str]]]:
    """Every face a person named or rejected a person for: (photo, box, person, rejected persons)."""
    return [
        (f["image"], list(f["bbox"]), f.get("person_id"), set(f.get("rejected_persons") or []))
        for f in meta.faces_in(LIBRARY)
        if f.get("label_source") == "human" or f.get("rejected_persons")
    ]


def assert_intact(meta: MetaStore, work: list[tuple[str, list[float], str | None, set[str]]], step: str) -> None:
    faces = meta.faces_in(LIBRARY)
    for image, bbox, person, rejected in work:
        here = [f for f in faces if f["image"] == image and box_iou(f["bbox"], bbox) >= 0.5]
        assert any(f.get("person_id") == person and rejected <= set(f.get("rejected_persons") or []) for f in here), (
            f"{step}: the human work on {image} {bbox} is gone: {here}"
        )
    for field in ("person_id", "cluster_id"):
        pairs = Counter((f["image"], f[field]) for f in faces if f.get(field))  # type: ignore[literal-required]
        assert max(pairs.values(), default=1) == 1, f"{step}: a photo has two faces of one {field}: {pairs}"
    clusters = {c["_id"]: c for c in meta.clusters(LIBRARY)}
    members = Counter(f["cluster_id"] for f in faces if f.get("cluster_id"))
    assert set(members) <= set(clusters), f"{step}: faces point to deleted clusters"
    assert all(clusters[c]["size"] == n for c, n in members.items()), f"{step}: cluster sizes are off"


@pytest.mark.usefixtures("ray_cluster")
def test_human_work_survives_every_re_run(
    store_settings: Settings, lfw_dir: Path, photos_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "library"
    for name in PEOPLE:
        (folder / name).mkdir(parents=True)
        for path in sorted((lfw_dir / "images" / name).glob("*.jpg"))[:8]:
            shutil.copy(path, folder / name / path.name)
    for name in GROUP:
        shutil.copy(photos_dir / "group" / name, folder / name)
    run_ingest(store_settings, str(folder), library=LIBRARY)
    run_cluster(store_settings, LIBRARY, method="dual")
    stores = connect(store_settings)
    meta = stores.meta
    curator = Curator(meta, stores.vectors, LIBRARY, "tester")

    # A person names Colin Powell's cluster and says a face of a group photo is not him.
    faces = meta.faces_in(LIBRARY)
    powell = Counter(f["cluster_id"] for f in faces if f["image"].startswith("Colin_Powell/") and f.get("cluster_id"))
    named = curator.label_cluster(powell.most_common(1)[0][0], "Colin Powell")
    stranger = next(f for f in faces if f["image"] == GROUP[0])
    curator.reject_face(stranger["_id"], named["person_id"])
    work = human_work(meta)
    assert len(work) >= 6 and any(rejected for *_, rejected in work)
    assert_intact(meta, work, "labelled")

    # Another detector, forced: every face id changes, the labels follow the boxes.
    forced = run_ingest(store_settings.updated(detector="yunet-s"), str(folder), library=LIBRARY, force=True)
    assert forced.faces > 0
    assert_intact(meta, work, "another detector")

    # Every file touched (a copy, a sync): new etags, new ids, the same labels.
    for path in folder.rglob("*.jpg"):
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 60))
    touched = run_ingest(store_settings, str(folder), library=LIBRARY)
    assert touched.skipped == 0
    assert_intact(meta, work, "touched")

    # A labelled photo that cannot be read on a re-run keeps its faces and labels.
    victim = folder / work[0][0]
    saved = victim.read_bytes()
    victim.write_bytes(b"not a photo any more")
    broken = run_ingest(store_settings, str(folder), library=LIBRARY)
    assert broken.failed == 1
    assert_intact(meta, work, "failed read")
    victim.write_bytes(saved)
    run_ingest(store_settings, str(folder), library=LIBRARY)
    assert_intact(meta, work, "read again")

    # A limited run changes only the faces it considers.
    before: dict[str, Any] = {f["_id"]: f.get("cluster_id") for f in meta.faces_in(LIBRARY)}
    limited = run_cluster(store_settings, LIBRARY, method="dual", max_faces=len(work) + 5)
    assert limited.kept > 0 and limited.faces == len(work) + 5
    after = {f["_id"]: f.get("cluster_id") for f in meta.faces_in(LIBRARY)}
    assert sum(before[f] != after[f] for f in after) <= limited.faces
    assert sum(1 for c in after.values() if c) >= sum(1 for c in before.values() if c) - limited.faces
    assert_intact(meta, work, "limited run")

    # Incremental matching of new faces respects the same rules.
    run_ingest(store_settings, str(photos_dir / "group"), library=LIBRARY)
    run_match(store_settings, stores, LIBRARY)
    assert_intact(meta, work, "match")

    # Erasing the person: their faces leave MongoDB and every Qdrant collection, and stay out.
    person = named["person_id"]
    erased_faces = [f for f in meta.faces_in(LIBRARY) if f.get("person_id") == person]
    result = erase(stores, actor="tester", person_id=person)
    assert result["mongodb"]["faces"] == len(erased_faces) == result["mongodb"]["tombstones"]
    assert result["qdrant"]["face_points"] >= len(erased_faces)
    ids = [f["_id"] for f in erased_faces]
    assert not meta.faces_in(LIBRARY, ids=ids) and meta.person(person) is None
    assert not stores.vectors.ids(LIBRARY) & set(ids)
    assert not any("Colin Powell" in repr(entry) for entry in meta.audit_page(LIBRARY, skip=0, limit=1000)[1])
    again = run_ingest(store_settings, str(folder), library=LIBRARY, force=True)
    assert again.failed == 0
    back = [f for f in meta.faces_in(LIBRARY) for (image, bbox, *_rest) in work if f["image"] == image]
    erased_boxes = [(f["image"], f["bbox"]) for f in erased_faces]
    assert not any(f["image"] == i and box_iou(f["bbox"], b) >= 0.5 for f in back for i, b in erased_boxes)
    assert check_stores(meta, stores.vectors, LIBRARY).consistent

    # A human action that would make two faces of one photo the same person is refused, naming the photo.
    pair = [f for f in meta.faces_in(LIBRARY) if f["image"] == GROUP[1]][:2]
    assert len(pair) == 2
    someone = curator.create_person("Someone")["_id"]
    curator.assign_face(pair[0]["_id"], someone)
    with pytest.raises(Conflict, match=f"photo {GROUP[1]} would show Someone twice"):
        curator.assign_face(pair[1]["_id"], someone)


@pytest.mark.usefixtures("ray_cluster")
def test_cleanup_undoes_one_run_and_library_deletion_removes_the_rest(
    store_settings: Settings, lfw_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "library"
    for name in PEOPLE:
        (folder / name).mkdir(parents=True)
        for path in sorted((lfw_dir / "images" / name).glob("*.jpg"))[:5]:
            shutil.copy(path, folder / name / path.name)
    run_ingest(store_settings, str(folder), library=LIBRARY)
    first = run_cluster(store_settings, LIBRARY, method="dual")
    stores = connect(store_settings)
    meta = stores.meta
    faces = meta.faces_in(LIBRARY)
    clustered = next(f for f in faces if f.get("cluster_id"))
    named = Curator(meta, stores.vectors, LIBRARY, "tester").label_cluster(str(clustered["cluster_id"]), "Someone")
    second = run_cluster(store_settings, LIBRARY, method="dual")
    assert second.clusters >= 1

    counted = cleanup_clustering(stores, LIBRARY, dry_run=True)
    assert counted["clustering_id"] == second.run_id and counted["removed"]["clusters"] == second.clusters
    assert len(meta.clusters(LIBRARY)) == second.clusters  # a dry run changes nothing
    with pytest.raises(NotFound):
        cleanup_clustering(stores, LIBRARY, clustering_id="run_000000000000")
    done = cleanup_clustering(stores, LIBRARY, clustering_id=second.run_id)
    assert done["removed"] == counted["removed"]
    after = meta.faces_in(LIBRARY)
    assert len(after) == len(faces)  # never ingested faces
    assert not meta.clusters(LIBRARY) and not any(f.get("cluster_id") for f in after)
    assert sum(f.get("person_id") == named["person_id"] for f in after) == named["faces"]  # human labels stay
    assert first.run_id != second.run_id

    # Photos gone from the source leave the library with --prune, and only then.
    leaving = [f["_id"] for f in meta.faces_in(LIBRARY) if f["image"].startswith(f"{PEOPLE[0]}/")]
    shutil.rmtree(folder / PEOPLE[0])
    with pytest.raises(InvalidInput, match="--prune needs the whole source"):
        run_ingest(store_settings, str(folder), library=LIBRARY, prune=True, limit=1)
    assert run_ingest(store_settings, str(folder), library=LIBRARY).pruned_images == 0
    pruned = run_ingest(store_settings, str(folder), library=LIBRARY, prune=True)
    assert (pruned.pruned_images, pruned.pruned_faces) == (5, len(leaving))
    assert not meta.faces_in(LIBRARY, ids=leaving) and not stores.vectors.ids(LIBRARY) & set(leaving)

    deleted = delete_library(stores, LIBRARY, actor="tester")
    left = len(faces) - len(leaving)
    assert deleted["mongodb"]["faces"] == left and deleted["qdrant"]["face_points"] == left
    assert not meta.faces_in(LIBRARY) and not stores.vectors.ids(LIBRARY) and LIBRARY not in meta.libraries()
    assert meta.audit_page(LIBRARY, skip=0, limit=10)[1][0]["action"] == "delete_library"  # the audit stays
