"""Online stores: the latest feature values per primary key, for low-latency lookups.

One boundary (:class:`OnlineStore`), two implementations chosen by ``featurestore.online_store``:
SQLite (embedded default) and Redis (``redis.url``; pipelined reads).
"""

from __future__ import annotations

from functools import cache

from featurestore.online.base import OnlineStore
from fjord.config import get_settings

__all__ = ["OnlineStore", "online_store"]


def online_store() -> OnlineStore:
    """The configured online store (one per process and configuration)."""
    settings = get_settings()
    kind = settings.featurestore.online_store
    target = settings.redis.url if kind == "redis" else str(settings.featurestore.online_sqlite_path)
    return _store(kind, target)


@cache
def _store(kind: str, target: str) -> OnlineStore:
    if kind == "redis":
        from featurestore.online.redis import RedisOnlineStore

        return RedisOnlineStore(target)
    from featurestore.online.sqlite import SQLiteOnlineStore

    return SQLiteOnlineStore(target)
