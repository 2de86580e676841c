"""SQLite online store: the embedded default (one file, WAL, safe across processes)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

from featurestore.online.base import OnlineStore
from fjord.config import Settings, SQLiteOnlineStoreConfig

_BATCH = 5_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_features (
    tbl TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
)
"""
_UPSERT = """
INSERT INTO online_features (tbl, key, ts, value) VALUES (?, ?, ?, ?)
ON CONFLICT (tbl, key) DO UPDATE SET ts = excluded.ts, value = excluded.value
WHERE excluded.ts >= online_features.ts
"""


class SQLiteOnlineStore(OnlineStore):
    @classmethod
    def from_config(cls, config: SQLiteOnlineStoreConfig, settings: Settings) -> SQLiteOnlineStore:
        return cls(str(config.path or settings.home / "online.db"))

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def write(self, table: str, rows: Iterable[tuple[str, int, bytes]]) -> int:
        conn, written, it = self._conn(), 0, iter(rows)
        while batch := list(islice(it, _BATCH)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, [(table, key, ts, value) for key, ts, value in batch])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            written += len(batch)
        return written

    def read(self, requests: Sequence[tuple[str, str]]) -> list[bytes | None]:
        conn = self._conn()
        if len(requests) == 1:
            row = conn.execute(
                "SELECT value FROM online_features WHERE tbl = ? AND key = ?", requests[0]
            ).fetchone()
            return [row[0] if row else None]
        found: dict[tuple[str, str], bytes] = {}
        by_table: dict[str, list[str]] = {}
        for table, key in requests:
            by_table.setdefault(table, []).append(key)
        for table, keys in by_table.items():
            for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[start : start + 900]
                marks = ",".join("?" * len(chunk))
                for key, value in conn.execute(
                    f"SELECT key, value FROM online_features WHERE tbl = ? AND key IN ({marks})",
                    [table, *chunk],
                ):
                    found[(table, key)] = value
        return [found.get(request) for request in requests]

    def drop(self, table: str) -> None:
        self._conn().execute("DELETE FROM online_features WHERE tbl = ?", (table,))

    def ping(self) -> None:
        self._conn().execute("SELECT 1")
