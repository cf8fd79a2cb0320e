"""Profiles of known users and the assignments of clusters to them (`profiles`, `assignments`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from pymongo import ReplaceOne

from facecluster.store.documents import AssignmentDoc, ProfileDoc
from facecluster.store.mongo import Doc, MongoCollections


class ProfileDocs(MongoCollections):
    """Profile documents (enrolment faces and template) and cluster→user assignments."""

    def profile(self, user_id: str) -> ProfileDoc | None:
        return cast("ProfileDoc | None", self.find_one("profiles", {"_id": user_id}))

    def profiles_of_model(self, model_version: str) -> list[ProfileDoc]:
        return cast(list[ProfileDoc], self.find("profiles", {"model_version": model_version}))

    def profiles_page(self, *, skip: int, limit: int) -> list[ProfileDoc]:
        return cast(list[ProfileDoc], self.find("profiles", {}, sort=[("_id", 1)], skip=skip, limit=limit))

    def profile_count(self) -> int:
        return self.count("profiles", {})

    def put_profile(self, user_id: str, doc: Doc | None) -> None:
        self.put("profiles", user_id, doc)

    def assignments(
        self, *, sort: str = "similarity", skip: int = 0, limit: int = 0, **filters: str | None
    ) -> list[AssignmentDoc]:
        """Assignments matching every filter given (library, clustering_id, cluster_id, user_id), highest
        `sort` first; a page of them with `skip` and `limit`."""
        query = _assignment_query(filters)
        return cast(list[AssignmentDoc], self.find("assignments", query, sort=[(sort, -1)], skip=skip, limit=limit))

    def count_assignments(self, **filters: str | None) -> int:
        return self.count("assignments", _assignment_query(filters))

    def write_assignments(self, docs: Sequence[Doc]) -> None:
        operations = [ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in docs]
        if operations:
            self.call(lambda: self.db.assignments.bulk_write(operations, ordered=False))

    def delete_assignments(self, *, clustering_id: str | None = None, user_id: str | None = None) -> int:
        """Assignments of one clustering run or of one user; how many went."""
        if (clustering_id is None) == (user_id is None):
            raise ValueError("name either a clustering run or a user")
        query = {"clustering_id": clustering_id} if clustering_id is not None else {"user_id": user_id}
        return self.delete("assignments", query)


def _assignment_query(filters: dict[str, str | None]) -> Doc:
    unknown = set(filters) - {"library", "clustering_id", "cluster_id", "user_id"}
    if unknown:
        raise TypeError(f"assignments have no filter {sorted(unknown)}")
    return {name: value for name, value in filters.items() if value is not None}
