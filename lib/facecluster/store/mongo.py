"""The MongoDB connection every store module shares: retries, host names without credentials, and the
embedded server's quirks handled in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import AutoReconnect, ConnectionFailure, InvalidURI, NetworkTimeout, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from facecluster.store.backoff import with_retries

T = TypeVar("T")
Doc = dict[str, Any]
Sort = Sequence[tuple[str, int]]

_TRANSIENT = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def mongo_hosts(uri: str) -> str:
    """The host(s) of a MongoDB URI, never its credentials: `db1:27017,db2:27017`, or the SRV name."""
    try:
        parsed = parse_uri(uri) if uri.startswith("mongodb://") else None
    except (InvalidURI, ValueError):
        parsed = None
    if parsed is not None:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parsed["nodelist"])
    # mongodb+srv:// (parsing would resolve DNS) or an unparsable URI: the part after the credentials.
    rest = uri.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0] or "an unnamed host"


def projection(fields: Sequence[str] | None) -> Doc | None:
    """A MongoDB projection of `fields`, or None (whole documents) when a field is dotted: the embedded
    MongoDB-wire server ignores dotted projections and would return documents without them."""
    if fields is None or any("." in field for field in fields):
        return None
    return dict.fromkeys(fields, 1)


class MongoCollections:
    """One database; every call retried with backoff on connection errors, naming the host when it gives up."""

    def __init__(self, uri: str, database: str, *, attempts: int = 5, timeout_ms: int = 5000) -> None:
        self.hosts = mongo_hosts(uri)
        self.client: MongoClient[Doc] = MongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
        )
        #: For tests that inspect what was stored; library code calls the named methods.
        self.db: Database[Doc] = self.client[database]
        self.attempts = attempts

    def call(self, call: Callable[[], T]) -> T:
        """`call()`, retried with backoff on connection errors."""
        return with_retries(call, backend=f"MongoDB at {self.hosts}", attempts=self.attempts, retry_on=_TRANSIENT)

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        """Raise unless the server answers (once, no retries: readiness probes want the truth now)."""
        self.client.admin.command("ping")

    def find(
        self,
        collection: str,
        query: Doc,
        fields: Sequence[str] | None = None,
        *,
        sort: Sort | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[Doc]:
        """Documents of `collection` matching `query` (only `fields` and `_id` where given), sorted and paged."""

        def run() -> list[Doc]:
            cursor = self.db[collection].find(query, projection(fields))
            if sort:
                cursor = cursor.sort(list(sort))
            return list(cursor.skip(skip).limit(limit))

        return self.call(run)

    def find_one(self, collection: str, query: Doc, fields: Sequence[str] | None = None) -> Doc | None:
        return self.call(lambda: self.db[collection].find_one(query, projection(fields)))

    def count(self, collection: str, query: Doc) -> int:
        """How many documents match `query`, by `$match` and `$count`: the embedded server answers
        `count_documents`' `$group` on a constant with nothing when the query holds a null."""
        pipeline: list[Doc] = [{"$match": query}, {"$count": "n"}]
        rows = self.call(lambda: list(self.db[collection].aggregate(pipeline)))
        return int(rows[0]["n"]) if rows else 0

    def put(self, collection: str, key: str, doc: Mapping[str, Any] | None) -> None:
        """Replace (or insert) the document `key`; None deletes it."""
        table = self.db[collection]
        if doc is None:
            self.call(lambda: table.delete_one({"_id": key}))
        else:
            self.call(lambda: table.replace_one({"_id": key}, doc, upsert=True))

    def delete(self, collection: str, query: Doc) -> int:
        return int(self.call(lambda: self.db[collection].delete_many(query).deleted_count))
