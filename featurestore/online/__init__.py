"""Online stores: the latest feature values per primary key, for low-latency lookups.

One boundary (:class:`OnlineStore`), two implementations chosen by ``featurestore.online_store``:
SQLite (embedded default) and Redis (``redis.url``; pipelined reads). With ``redis.url`` unset, the
embedded Redis-protocol server (:mod:`fjord.services`) is started on first use.
"""

from __future__ import annotations

import hashlib
from functools import cache

from featurestore.online.base import OnlineStore
from fjord.config import get_settings
from fjord.services import redis_url

__all__ = ["OnlineStore", "online_store"]


def online_store() -> OnlineStore:
    """The configured online store (one per process and configuration)."""
    settings = get_settings()
    kind = settings.featurestore.online_store
    if kind == "redis":
        # One Redis may serve several Fjord installations: keys carry the storage root's hash.
        namespace = hashlib.sha256(str(settings.storage.root).encode()).hexdigest()[:10]
        return _store(kind, redis_url(settings), namespace)
    return _store(kind, str(settings.featurestore.online_sqlite_path), "")


@cache
def _store(kind: str, target: str, namespace: str) -> OnlineStore:
    if kind == "redis":
        from featurestore.online.redis import RedisOnlineStore

        return RedisOnlineStore(target, namespace)
    from featurestore.online.sqlite import SQLiteOnlineStore

    return SQLiteOnlineStore(target)
