"""Persons and the audit trail of human changes, in MongoDB's `persons` and `audit` collections."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from facecluster.store.documents import AuditDoc, PersonDoc
from facecluster.store.mongo import Doc, MongoCollections


class PeopleDocs(MongoCollections):
    """Named persons of a library and every human change made to them."""

    def person(self, person_id: str, library: str | None = None) -> PersonDoc | None:
        query: Doc = {"_id": person_id} if library is None else {"_id": person_id, "library": library}
        return cast("PersonDoc | None", self.find_one("persons", query))

    def active_persons(self, library: str) -> list[PersonDoc]:
        """Persons not merged into another one."""
        return cast(list[PersonDoc], self.find("persons", {"library": library, "merged_into": None}))

    def person_by_name(self, library: str, name: str) -> PersonDoc | None:
        return cast(
            "PersonDoc | None", self.find_one("persons", {"library": library, "name": name, "merged_into": None})
        )

    def person_names(self, person_ids: Iterable[str]) -> dict[str, str]:
        docs = self.find("persons", {"_id": {"$in": sorted(set(person_ids))}}, ["name"])
        return {doc["_id"]: doc["name"] for doc in docs}

    def put_person(self, person_id: str, doc: Mapping[str, Any] | None) -> None:
        self.put("persons", person_id, doc)

    def record_audit(self, entry: AuditDoc) -> None:
        self.call(lambda: self.db.audit.replace_one({"_id": entry["_id"]}, entry, upsert=True))  # retry-safe

    def audit_entry(self, audit_id: str, library: str) -> AuditDoc | None:
        return cast("AuditDoc | None", self.find_one("audit", {"_id": audit_id, "library": library}))

    def audit_page(self, library: str | None, *, skip: int, limit: int) -> tuple[int, list[AuditDoc]]:
        """A library's changes (every change with None), newest first, without their before and after
        states; and how many there are."""
        query = {} if library is None else {"library": library}
        fields = ["library", "actor", "action", "target", "details", "at", "faces", "undone_by"]
        page = self.find("audit", query, fields, sort=[("at", -1)], skip=skip, limit=limit)
        return self.count("audit", query), cast(list[AuditDoc], page)

    def redact_audit(self, library: str, person_id: str, name: str, replacement: str) -> int:
        """Replace an erased person's name everywhere the library's audit holds it; how many entries changed."""
        changed = 0
        for entry in self.find("audit", {"library": library}):
            text = repr(entry)
            if person_id not in text and repr(name) not in text:
                continue
            redacted = _replace_name(entry, person_id, name, replacement)
            if redacted != entry:
                self.call(lambda redacted=redacted: self.db.audit.replace_one({"_id": redacted["_id"]}, redacted))  # type: ignore[misc]
                changed += 1
        return changed

    def mark_undone(self, audit_id: str, by: str) -> None:
        self.call(lambda: self.db.audit.update_one({"_id": audit_id}, {"$set": {"undone_by": by}}))


def _replace_name(value: Any, person_id: str, name: str, replacement: str) -> Any:
    """`value` with the person's name replaced wherever it is the name of `person_id` or stands alone."""
    if isinstance(value, dict):
        if value.get("_id") == person_id and "name" in value:
            value = {**value, "name": replacement}
        return {k: _replace_name(v, person_id, name, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_name(v, person_id, name, replacement) for v in value]
    return replacement if value == name else value
