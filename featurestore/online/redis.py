"""Redis online store: one hash per row (``fjord:<namespace>:<table>:<key>`` -> ts, v); pipelined I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

import redis

from featurestore.errors import FeatureStoreError
from featurestore.online.base import OnlineStore

_BATCH = 2_000
# Newest event time wins, atomically per row.
_UPSERT = """
local current = redis.call('HGET', KEYS[1], 'ts')
if (not current) or tonumber(current) <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'v', ARGV[2])
  return 1
end
return 0
"""


class RedisOnlineStore(OnlineStore):
    def __init__(self, url: str, namespace: str = "default") -> None:
        self.url = url
        self.prefix = f"fjord:{namespace}:"
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._upsert = self.client.register_script(_UPSERT)

    def _key(self, table: str, key: str) -> str:
        return f"{self.prefix}{table}:{key}"

    def write(self, table: str, rows: Iterable[tuple[str, int, bytes]]) -> int:
        written, it = 0, iter(rows)
        try:
            while batch := list(islice(it, _BATCH)):
                pipe = self.client.pipeline(transaction=False)
                for key, ts, value in batch:
                    self._upsert(keys=[self._key(table, key)], args=[ts, value], client=pipe)
                pipe.execute()
                written += len(batch)
        except redis.RedisError as exc:
            raise FeatureStoreError(f"online store {self.url}: {exc}") from None
        return written

    def read(self, requests: Sequence[tuple[str, str]]) -> list[bytes | None]:
        try:
            if len(requests) == 1:
                return [self.client.hget(self._key(*requests[0]), "v")]
            pipe = self.client.pipeline(transaction=False)
            for table, key in requests:
                pipe.hget(self._key(table, key), "v")
            return pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"online store {self.url}: {exc}") from None

    def drop(self, table: str) -> None:
        keys = self.client.scan_iter(match=f"{self.prefix}{table}:*", count=1000)
        while batch := list(islice(keys, 1000)):
            self.client.unlink(*batch)

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"online store {self.url} is unreachable: {exc}") from None
