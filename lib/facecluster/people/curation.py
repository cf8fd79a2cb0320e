"""People work on a library: label and split clusters; create, rename and merge persons; move,
remove, assign and reject faces. Every human change is
written to the `audit` collection with who, what, when and the state before, so it can be undone.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from facecluster.cluster.methods import UNCLUSTERED, ClusterParams, cluster
from facecluster.cluster.run import cluster_docs, group_totals, write_labels
from facecluster.engine.projection import unit
from facecluster.errors import Conflict, NotFound
from facecluster.people.decisions import changed_since, cleared, face_state, labelled, shared_photo
from facecluster.store.documents import AuditDoc, ClusterDoc, FaceDoc, PersonDoc, audit_entry
from facecluster.store.meta import Doc, MetaStore, now
from facecluster.store.vectors import Vectors

P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[Curator, P], R]) -> Callable[Concatenate[Curator, P], R]:
    """A change made while holding the library's lock, so a clustering run or another change cannot
    interleave with it."""

    def locked(curator: Curator, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with curator.meta.library_lock(curator.library):
            return method(curator, *args, **kwargs)

    functools.update_wrapper(locked, method)
    return locked


def _essence(doc: Mapping[str, Any] | None) -> Any:
    """What makes a person or cluster the same for an undo: its labels, not when it was written."""
    if doc is None:
        return None
    return {key: value for key, value in doc.items() if not key.endswith("_at")}


@dataclass
class Curator:
    """Changes to one library's persons and clusters, made by `actor`."""

    meta: MetaStore
    vectors: Vectors
    library: str
    actor: str = "anonymous"

    # Reading.
    def face(self, face_id: str) -> FaceDoc:
        found = self.meta.face(face_id, self.library)
        if found is None:
            raise NotFound(f"face {face_id} not found in library {self.library}")
        return found

    def person(self, person_id: str) -> PersonDoc:
        doc = self.meta.person(person_id, self.library)
        if doc is None:
            raise NotFound(f"person {person_id} not found in library {self.library}")
        return doc

    def active_person(self, person_id: str) -> PersonDoc:
        doc = self.person(person_id)
        if doc.get("merged_into"):
            raise Conflict(f"person {person_id} was merged into {doc['merged_into']}")
        return doc

    def cluster(self, cluster_id: str) -> ClusterDoc:
        doc = self.meta.cluster(cluster_id, self.library)
        if doc is None:
            raise NotFound(f"cluster {cluster_id} not found in library {self.library}")
        return doc

    def persons(self, *, skip: int = 0, limit: int = 50, hidden: bool = False) -> tuple[int, list[Doc]]:
        """Active persons (hidden ones with `hidden`), most faces first, with their face counts and
        best-quality face."""
        counts = self.meta.person_face_counts(self.library)
        docs: list[Doc] = [
            {**d, "faces": counts.get(d["_id"], 0)}
            for d in self.meta.active_persons(self.library)
            if hidden or not d.get("hidden")
        ]
        docs.sort(key=lambda d: (-d["faces"], d["name"]))
        page = docs[skip : skip + limit]
        for doc in page:
            best = self.meta.faces_in(self.library, ["quality"], person_id=doc["_id"], best_first=True, limit=1)
            doc["owner_face_id"] = best[0]["_id"] if best else None
        return len(docs), page

    def person_by_name(self, name: str) -> PersonDoc | None:
        return self.meta.person_by_name(self.library, name)

    # Changing, with the audit trail.
    def _change(
        self,
        action: str,
        target: str,
        faces: Sequence[FaceDoc],
        new_states: dict[str, Doc],
        *,
        persons: Mapping[str, Mapping[str, Any] | None] | None = None,
        clusters: Mapping[str, Mapping[str, Any] | None] | None = None,
        details: Doc | None = None,
    ) -> AuditDoc:
        """Apply face states and person/cluster documents (None deletes); record the before state."""
        persons, clusters = persons or {}, clusters or {}
        before_persons = {p: self.meta.person(p) for p in persons}
        before_clusters = {c: self.meta.cluster(c) for c in clusters}
        entry = audit_entry(
            self.library,
            self.actor,
            action,
            target,
            details=details or {},
            faces=len(new_states),
            before={
                "faces": {f["_id"]: face_state(f) for f in faces if f["_id"] in new_states},
                "persons": before_persons,
                "clusters": before_clusters,
            },
            after={"faces": new_states, "persons": persons, "clusters": clusters},
            undone_by=None,
        )
        self.meta.record_audit(entry)
        full = {f["_id"]: {**face_state(f), **new_states[f["_id"]]} for f in faces if f["_id"] in new_states}
        write_labels(self.meta, [f for f in faces if f["_id"] in full], full)
        for person_id, doc in persons.items():
            self.meta.put_person(person_id, doc)
        for cluster_id, doc in clusters.items():
            self.meta.put_cluster(cluster_id, doc)
        return entry

    def _one_face_per_photo(self, person: Mapping[str, Any], joining: Sequence[FaceDoc]) -> None:
        """Refuse a change that would make two faces of one photo the same person, naming the photo."""
        members = self.meta.faces_in(self.library, ["image"], person_id=str(person["_id"]))
        photo = shared_photo(joining, members)
        if photo is not None:
            raise Conflict(
                f"photo {photo} would show {person.get('name', person['_id'])} twice: "
                "two faces of one photo are never the same person; move or remove the other face first"
            )

    def _new_person(self, name: str) -> PersonDoc:
        if self.person_by_name(name) is not None:
            raise Conflict(f"a person named {name!r} exists in library {self.library}")
        return {
            "_id": f"per_{uuid.uuid4().hex[:12]}",
            "library": self.library,
            "name": name,
            "merged_into": None,
            "created_at": now(),
            "created_by": self.actor,
        }

    @_locked
    def create_person(self, name: str) -> PersonDoc:
        person = self._new_person(name)
        self._change("create_person", person["_id"], [], {}, persons={person["_id"]: person})
        return person

    @_locked
    def rename_person(self, person_id: str, name: str) -> Doc:
        person = self.active_person(person_id)
        other = self.person_by_name(name)
        if other is not None and other["_id"] != person_id:
            raise Conflict(f"a person named {name!r} exists in library {self.library}")
        renamed = {**person, "name": name}
        self._change("rename_person", person_id, [], {}, persons={person_id: renamed}, details={"name": name})
        return renamed

    @_locked
    def hide_person(self, person_id: str, hidden: bool) -> Doc:
        """Hide a person from the galleries (or show them again); their faces keep their label."""
        person = {**self.active_person(person_id), "hidden": hidden}
        action = "hide_person" if hidden else "show_person"
        self._change(action, person_id, [], {}, persons={person_id: person}, details={"hidden": hidden})
        return person

    @_locked
    def label_cluster(self, cluster_id: str, name: str) -> Doc:
        """The cluster's faces become the person `name` (an existing one of that name, else a new one)."""
        self.cluster(cluster_id)
        person = self.person_by_name(name) or self._new_person(name)
        faces = self.meta.faces_in(self.library, cluster_id=cluster_id)
        self._one_face_per_photo(person, faces)
        states = {f["_id"]: labelled(f, person["_id"]) for f in faces}
        self._change(
            "label_cluster",
            cluster_id,
            faces,
            states,
            persons={person["_id"]: person},
            clusters={cluster_id: None},
            details={"name": name},
        )
        return {"cluster_id": cluster_id, "person_id": person["_id"], "name": name, "faces": len(faces)}

    @_locked
    def split_cluster(self, cluster_id: str, params: ClusterParams) -> Doc:
        """Re-cluster one cluster's faces with `params` (tighter); faces that fit no part become unclustered."""
        old = self.cluster(cluster_id)
        faces = sorted(self.meta.faces_in(self.library, cluster_id=cluster_id), key=lambda f: f["_id"])
        ids = [f["_id"] for f in faces]
        matrix = unit(self.vectors.fetch(ids)).astype(np.float32)
        labels = cluster(matrix, [f["image"] for f in faces], params)
        groups = [[ids[i] for i in np.flatnonzero(labels == v)] for v in range(labels.max(initial=UNCLUSTERED) + 1)]
        new_ids = [f"clu_{uuid.uuid4().hex[:12]}" for _ in groups]
        states = {f["_id"]: {**face_state(f), "cluster_id": None} for f in faces}
        for new_id, group in zip(new_ids, groups, strict=True):
            for face_id in group:
                states[face_id]["cluster_id"] = new_id
        neighbours = self.meta.faces_of_images(self.library, sorted({f["image"] for f in faces}))
        context = {f["_id"]: {**face_state(f), **states.get(f["_id"], {})} for f in neighbours}
        docs = cluster_docs(
            self.library,
            old["run_id"],
            new_ids,
            groups,
            [*faces, *[f for f in neighbours if f["_id"] not in states]],
            group_totals(ids, matrix, groups),
            context,
            now(),
        )
        changed = {cluster_id: None, **{doc["_id"]: doc for doc in docs}}
        self._change("split_cluster", cluster_id, faces, states, clusters=changed, details={"into": new_ids})
        return {
            "cluster_id": cluster_id,
            "clusters": [{"cluster_id": d["_id"], "size": d["size"]} for d in docs],
            "unclustered": int((labels == UNCLUSTERED).sum()),
        }

    @_locked
    def merge_persons(self, source_id: str, into_id: str) -> Doc:
        """Every face of `source_id` goes to `into_id`; the source is marked merged and takes no more faces."""
        if source_id == into_id:
            raise Conflict("a person cannot be merged into itself")
        source, into = self.active_person(source_id), self.active_person(into_id)
        faces = self.meta.faces_in(self.library, person_id=source_id)
        self._one_face_per_photo(into, faces)
        states = {f["_id"]: {"person_id": into_id} for f in faces}
        merged = {**source, "merged_into": into_id, "merged_at": now()}
        self._change(
            "merge_persons", source_id, faces, states, persons={source_id: merged}, details={"into": into["_id"]}
        )
        return {"person_id": into_id, "merged": source_id, "faces_moved": len(faces)}

    def _person_faces(self, person_id: str, face_ids: Sequence[str]) -> list[FaceDoc]:
        faces = self.meta.faces_in(self.library, ids=face_ids)
        found = {f["_id"] for f in faces if f.get("person_id") == person_id}
        missing = [f for f in face_ids if f not in found]
        if missing:
            raise NotFound(f"{len(missing)} faces are not faces of person {person_id} (first: {missing[0]})")
        return faces

    @_locked
    def remove_faces(self, person_id: str, face_ids: Sequence[str]) -> Doc:
        """Take faces from a person; they become unclustered and never go back to it automatically."""
        self.person(person_id)
        faces = self._person_faces(person_id, face_ids)
        states = {f["_id"]: cleared(f, reject=person_id) for f in faces}
        self._change("remove_faces", person_id, faces, states)
        return {"person_id": person_id, "removed": len(faces)}

    @_locked
    def move_faces(self, person_id: str, face_ids: Sequence[str], *, to: str | None, name: str | None) -> Doc:
        """Move faces to the person `to`, or to a new person called `name`."""
        self.person(person_id)
        faces = self._person_faces(person_id, face_ids)
        persons: dict[str, PersonDoc] = {}
        if to is not None:
            target = self.active_person(to)
        elif name is not None:
            target = self.person_by_name(name) or self._new_person(name)
            persons[target["_id"]] = target
        else:
            raise Conflict("say where the faces go: `to_person_id` or `new_name`")
        self._one_face_per_photo(target, faces)
        states = {f["_id"]: labelled(f, target["_id"]) for f in faces}
        self._change("move_faces", person_id, faces, states, persons=persons, details={"to": target["_id"]})
        return {"from": person_id, "to": target["_id"], "moved": len(faces)}

    @_locked
    def assign_face(self, face_id: str, person_id: str) -> Doc:
        face, person = self.face(face_id), self.active_person(person_id)
        self._one_face_per_photo(person, [face])
        self._change(
            "assign_face", face_id, [face], {face_id: labelled(face, person_id)}, details={"person_id": person_id}
        )
        return {"face_id": face_id, "person_id": person_id}

    @_locked
    def unassign_face(self, face_id: str) -> Doc:
        face = self.face(face_id)
        self._change("unassign_face", face_id, [face], {face_id: cleared(face)})
        return {"face_id": face_id, "person_id": None}

    @_locked
    def reject_face(self, face_id: str, person_id: str) -> Doc:
        """ "Not this person": the face leaves `person_id` (if it was there) and is never matched to it again."""
        face, _ = self.face(face_id), self.person(person_id)
        state = cleared(face, reject=person_id)
        if face.get("person_id") != person_id:  # keep its current person, only remember the rejection
            state.update(
                person_id=face.get("person_id"),
                label_source=face.get("label_source"),
                cluster_id=face.get("cluster_id"),
                person_similarity=face.get("person_similarity"),
            )
        self._change("reject_face", face_id, [face], {face_id: state}, details={"person_id": person_id})
        return {"face_id": face_id, "rejected_persons": state["rejected_persons"]}

    def audit(self, *, skip: int = 0, limit: int = 50) -> tuple[int, list[AuditDoc]]:
        return self.meta.audit_page(self.library, skip=skip, limit=limit)

    @_locked
    def undo(self, audit_id: str) -> Doc:
        """Restore the state before change `audit_id`, if its faces have not changed since."""
        entry = self.meta.audit_entry(audit_id, self.library)
        if entry is None:
            raise NotFound(f"audit entry {audit_id} not found in library {self.library}")
        if entry.get("undone_by"):
            raise Conflict(f"{audit_id} was undone by {entry['undone_by']}")
        after, before = entry["after"], entry["before"]
        faces = self.meta.faces_in(self.library, ids=list(after["faces"]))
        changed = changed_since(after["faces"], faces)
        if changed is not None:
            raise Conflict(f"face {changed} changed after {audit_id}: undo the later change first")
        restoring = set(after["faces"])
        for kind, current in (("person", self.meta.person), ("cluster", self.meta.cluster)):
            for key, state in after[f"{kind}s"].items():
                if _essence(current(key)) != _essence(state):
                    raise Conflict(f"{kind} {key} changed after {audit_id}: undo the later change first")
                if before[f"{kind}s"].get(key) is None and state is not None:  # the undo would delete it
                    field = f"{kind}_id"
                    others = [
                        f["_id"]
                        for f in self.meta.faces_in(self.library, ["_id"], **{field: key})
                        if f["_id"] not in restoring
                    ]
                    if others:
                        raise Conflict(f"{kind} {key} has {len(others)} faces from later changes: undo those first")
        undo = self._change(
            "undo", audit_id, faces, before["faces"], persons=before["persons"], clusters=before["clusters"]
        )
        self.meta.mark_undone(audit_id, undo["_id"])
        return {"undone": audit_id, "audit_id": undo["_id"], "faces": len(faces)}
