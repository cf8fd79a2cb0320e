"""What a human action does to a face's labels, as pure functions over face documents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from facecluster.store.meta import Doc

#: The face fields a change touches (and an undo restores).
FIELDS = ("person_id", "label_source", "cluster_id", "rejected_persons", "person_similarity")


def face_state(face: Mapping[str, Any]) -> Doc:
    """The labels of a face: what a change may alter and an undo restores."""
    return {field: face.get(field) for field in FIELDS}


def labelled(face: Mapping[str, Any], person_id: str) -> Doc:
    """A person names the face: it leaves its cluster, and a "not this person" for that person lapses."""
    rejected = [p for p in face.get("rejected_persons") or [] if p != person_id]
    return {
        "person_id": person_id,
        "label_source": "human",
        "cluster_id": None,
        "rejected_persons": rejected,
        "person_similarity": None,
    }


def cleared(face: Mapping[str, Any], reject: str | None = None) -> Doc:
    """The face belongs to nobody; with `reject`, it may never be matched to that person again."""
    rejected = list(face.get("rejected_persons") or [])
    if reject and reject not in rejected:
        rejected.append(reject)
    return {
        "person_id": None,
        "label_source": None,
        "cluster_id": None,
        "rejected_persons": rejected,
        "person_similarity": None,
    }


def changed_since(expected: Mapping[str, Doc], faces: Iterable[Mapping[str, Any]]) -> str | None:
    """The first face whose labels differ from the state a change left (`expected`: face id → state), or
    None: an undo is safe only when nothing changed the faces since."""
    for face in faces:
        if any(face.get(key) != value for key, value in expected[face["_id"]].items()):
            return str(face["_id"])
    return None


def shared_photo(joining: Iterable[Mapping[str, Any]], members: Iterable[Mapping[str, Any]]) -> str | None:
    """The first photo that would show one person twice if the `joining` faces joined a person whose faces
    are `members`, or None: two faces of one photo are never the same person."""
    seen: dict[str, str] = {}
    for face in [*members, *joining]:
        image, face_id = str(face["image"]), str(face["_id"])
        if seen.setdefault(image, face_id) != face_id:
            return image
    return None
