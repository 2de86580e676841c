"""Online stores: the latest feature values per primary key, for low-latency lookups.

One boundary (:class:`OnlineStore`) and a registry of implementations (:mod:`fjord.plugins`), chosen
by ``featurestore.online_store``'s ``type``: ``sqlite`` (embedded default; ``path``) and ``redis``
(``url``, default ``redis.url``; pipelined reads). With no URL anywhere, the embedded
Redis-protocol server (:mod:`fjord.services`) is started on first use. Another store registers with
``ONLINE_STORES.register(name, factory)`` and a config class in the settings.
"""

from __future__ import annotations

from featurestore.online.base import OnlineStore
from fjord.config import get_settings
from fjord.fs import storage_root
from fjord.plugins import Registry

__all__ = ["ONLINE_STORES", "OnlineStore", "online_store"]

ONLINE_STORES: Registry[OnlineStore] = Registry("online store")
ONLINE_STORES.register("sqlite", "featurestore.online.sqlite:SQLiteOnlineStore.from_config")
ONLINE_STORES.register("redis", "featurestore.online.redis:RedisOnlineStore.from_config")


_stores: dict[tuple[object, ...], OnlineStore] = {}


def online_store() -> OnlineStore:
    """The configured online store (one per process and configuration)."""
    settings = get_settings()
    config = settings.featurestore.online_store
    key = (config, storage_root(settings), settings.redis.url)
    if key not in _stores:
        _stores[key] = ONLINE_STORES.create(config, settings)
    return _stores[key]
