"""Library statistics and grouped reads on the real MongoDB-wire server agree with the same counts taken in
Python."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import pytest

import facecluster.store.meta as meta_module
from facecluster.people.stats import BINS, library_stats
from facecluster.settings import Settings
from facecluster.store.connection import open_meta


def expected(faces: list[dict[str, Any]], library: str | None) -> dict[str, Any]:
    mine = [f for f in faces if library is None or f["library"] == library]
    sizes = Counter(f["person_id"] or f["cluster_id"] for f in mine if f["person_id"] or f["cluster_id"])
    photos: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in mine:
        if f["person_id"] or f["cluster_id"]:
            photos[(f["library"], f["image"])].add(f["person_id"] or f["cluster_id"])
    return {
        "library": library,
        "faces": len(mine),
        "persons": sum(1 for who in sizes if who.startswith("per_")),
        "clusters": sum(1 for who in sizes if who.startswith("clu_")),
        "unclustered": sum(1 for f in mine if not f["person_id"] and not f["cluster_id"]),
        "human_labelled": sum(1 for f in mine if f["label_source"] == "human"),
        "auto_assigned": sum(1 for f in mine if f["label_source"] == "auto"),
        "faces_per_person": {
            label: sum(1 for n in sizes.values() if low <= n <= (high or n)) for label, low, high in BINS
        },
        "multi_person_images": sum(1 for who in photos.values() if len(who) > 1),
    }


def test_statistics_match_a_count_in_python(store_settings: Settings) -> None:
    rng = random.Random(7)
    faces = []
    for n in range(1500):
        named, clustered = rng.random() < 0.1, rng.random() < 0.8
        faces.append({
            "_id": f"f{n:05d}", "library": rng.choice(["a", "b"]), "image": f"p{rng.randrange(400):04d}.jpg",
            "person_id": f"per_{rng.randrange(12)}" if named else None,
            # A face a person labelled keeps the cluster it was in: it counts for its person.
            "cluster_id": f"clu_{rng.randrange(60)}" if clustered else None,
            "label_source": "human" if named and rng.random() < 0.7 else ("auto" if named else None),
        })  # fmt: skip
    meta = open_meta(store_settings)
    meta.write_faces(faces)
    for library in ("a", "b", None):
        assert library_stats(meta, library) == expected(faces, library)


def test_the_photos_of_clusters_are_grouped_by_the_server(store_settings: Settings) -> None:
    rng = random.Random(3)
    faces = [
        {"_id": f"f{n:04d}", "library": rng.choice(["a", "b"]), "image": f"p{rng.randrange(300):03d}.jpg",
         "cluster_id": f"clu_{rng.randrange(40)}" if rng.random() < 0.9 else None}
        for n in range(800)
    ]  # fmt: skip
    meta = open_meta(store_settings)
    meta.write_faces(faces)
    wanted = ["clu_1", "clu_7", "clu_39", "clu_nobody"]
    photos: dict[str, set[str]] = {cluster: set() for cluster in wanted}
    for face in faces:
        if face["library"] == "a" and face["cluster_id"] in photos:
            photos[face["cluster_id"]].add(face["image"])
    assert meta.cluster_photos("a", wanted) == photos
    assert meta.cluster_photos("a", []) == {}


def test_faces_are_read_in_pages_each_once_while_faces_come_and_go(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library read in pages while faces are deleted before the read's position (the next page's anchor
    among them) and after it, and one is added: every face still stored comes once, the deleted unread ones
    do not, the other library's never."""
    monkeypatch.setattr(meta_module, "FACE_PAGE", 10)
    meta = open_meta(store_settings)
    meta.write_faces([{"_id": f"f{n:05d}", "library": "a" if n < 47 else "b", "image": f"p{n}.jpg"} for n in range(52)])
    read: list[str] = []
    for face in meta.iter_faces("a", ["image"]):
        read.append(face["_id"])
        if len(read) == 5:  # the first page is in hand: faces 2 and 4 were read, 9 anchors the next page
            assert meta.delete_faces(["f00002", "f00004", "f00009", "f00030"]) == 4
            meta.write_faces([{"_id": "f00100", "library": "a", "image": "late.jpg"}])
    assert len(read) == len(set(read))
    assert set(read) == {f"f{n:05d}" for n in range(47) if n != 30} | {"f00100"}
