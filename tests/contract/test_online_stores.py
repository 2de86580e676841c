"""The online store contract, run against SQLite and a real Redis-protocol server (the embedded one)."""

from __future__ import annotations

import uuid

import pytest

from featurestore.online.base import OnlineStore
from featurestore.online.redis import RedisOnlineStore
from featurestore.online.sqlite import SQLiteOnlineStore


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path) -> OnlineStore:
    if request.param == "sqlite":
        yield SQLiteOnlineStore(str(tmp_path / "online.db"))
        return
    url = request.getfixturevalue("redis_server")
    redis_store = RedisOnlineStore(url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    redis_store.ping()
    yield redis_store
    for table in ("t", "u"):
        redis_store.drop(table)


def test_write_then_read_in_request_order(store: OnlineStore) -> None:
    assert store.write("t", [("[1]", 10, b'{"a":1}'), ("[2]", 10, b'{"a":2}')]) == 2
    assert store.read([("t", "[2]"), ("t", "[1]"), ("t", "[3]"), ("u", "[1]")]) == [
        b'{"a":2}',
        b'{"a":1}',
        None,
        None,
    ]
    assert store.read([("t", "[1]")]) == [b'{"a":1}']


def test_newest_event_time_wins(store: OnlineStore) -> None:
    store.write("t", [("[1]", 10, b"new")])
    store.write("t", [("[1]", 5, b"late-arriving older row")])
    assert store.read([("t", "[1]")]) == [b"new"]
    store.write("t", [("[1]", 10, b"same time replaces")])
    assert store.read([("t", "[1]")]) == [b"same time replaces"]


def test_large_batches_and_drop(store: OnlineStore) -> None:
    rows = [(f"[{i}]", i, str(i).encode()) for i in range(12_000)]
    assert store.write("t", iter(rows)) == 12_000
    keys = [("t", f"[{i}]") for i in range(0, 12_000, 7)]
    assert store.read(keys) == [str(i).encode() for i in range(0, 12_000, 7)]
    store.drop("t")
    assert store.read([("t", "[0]")]) == [None]
