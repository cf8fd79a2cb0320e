"""Store addresses in messages: the hosts of every MongoDB URI form, never its credentials."""

from __future__ import annotations

import pytest

from facecluster.store.mongo import mongo_hosts

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("uri", "hosts"),
    [
        ("mongodb://127.0.0.1:27017/", "127.0.0.1:27017"),
        ("mongodb://app:hunter2@db.internal:27017/faces", "db.internal:27017"),
        ("mongodb://app:p%40ss%3Aw0rd@db:27017/?authSource=admin", "db:27017"),
        ("mongodb://app:pw@db1:27017,db2:27018,db3/faces?replicaSet=rs0", "db1:27017,db2:27018,db3:27017"),
        ("mongodb://app:pw@[::1]:27017/", "[::1]:27017"),
        ("mongodb+srv://app:pw@cluster0.example.mongodb.net/faces?retryWrites=true", "cluster0.example.mongodb.net"),
        ("mongodb://db", "db:27017"),
    ],
)
def test_hosts_are_named_without_credentials(uri: str, hosts: str) -> None:
    named = mongo_hosts(uri)
    assert named == hosts
    assert "pw" not in named and "hunter2" not in named and "p%40ss" not in named


def test_a_store_error_names_the_host_and_not_the_password() -> None:
    from facecluster.store.backoff import BackendUnavailable
    from facecluster.store.meta import MetaStore

    meta = MetaStore("mongodb://app:hunter2@127.0.0.1:9/?authSource=admin", "x", attempts=1, timeout_ms=200)
    with pytest.raises(BackendUnavailable) as raised:
        meta.libraries()
    assert "MongoDB at 127.0.0.1:9" in str(raised.value) and "hunter2" not in str(raised.value)
