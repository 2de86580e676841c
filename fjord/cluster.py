"""The cluster profile: the same platform on multi-process topologies, on one machine.

``services.profile: cluster`` (``FJORD_SERVICES__PROFILE=cluster``) replaces the embedded servers by:

- **Spark standalone**: a master and ``services.cluster.spark_workers`` workers
  (:mod:`fjord.services.spark_standalone`); jobs run on it, executors get the project's environment
  through ``spark.archives``;
- **HDFS**: a NameNode and ``datanodes`` DataNodes, replication 2; the shared filesystem root is
  ``hdfs://.../fjord``;
- **Kafka**: ``kafka_brokers`` KRaft nodes, topics replicated 3 times, ``min.insync.replicas=2``;
- **PostgreSQL** as the metadata database, **Valkey** for the online store.

Their state lives in ``$FJORD_HOME/cluster/services/<name>/``, apart from the embedded profile's, so
one home may hold both. A setting given explicitly (``storage.root``, ``spark.master``...) wins: the
profile fills only what is unset, from the addresses the services recorded when they started.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fjord.config import ClusterSettings, Settings

# In start order: the databases, then storage, the broker, then Spark.
SERVICE_NAMES = ("postgres", "redis", "hdfs", "kafka", "spark")
ROOT_PATH = "/fjord"  # the shared filesystem root inside the cluster's HDFS


def services_home(home: Path) -> Path:
    """Where the cluster's services keep their state (``<home>/cluster/services/<name>/``)."""
    return home / "cluster"


def resolve(settings: Settings) -> Settings:
    """The settings once the cluster's storage and metadata services run (started if needed): what
    an unset ``storage.root`` or ``metadata.url`` of the cluster profile resolves to."""
    from fjord.config import get_settings, reset_settings
    from fjord.services import ensure

    ensure("hdfs", settings)
    ensure("postgres", settings)
    reset_settings()  # reloaded: fill_defaults now finds both addresses
    resolved = get_settings()
    if resolved.storage.root is None or resolved.metadata.url is None:
        from fjord.errors import ServiceError

        raise ServiceError("the cluster profile's HDFS or PostgreSQL recorded no address after starting")
    return resolved


def spark_master(settings: Settings) -> str:
    """The cluster's Spark master (started if needed)."""
    from fjord.services import ensure

    return ensure("spark", settings)


def spark_client_conf(settings: Settings, master: str) -> dict[str, str]:
    """What an application of the cluster needs: the master's RPC secret (for the cluster's own
    master), and HDFS's replication, which Hadoop's client decides (its default is 3, which two
    DataNodes cannot hold)."""
    from fjord.services import service
    from fjord.services.spark_standalone import SparkStandaloneService

    spark = service("spark", settings)
    assert isinstance(spark, SparkStandaloneService)
    conf = {"spark.hadoop.dfs.replication": str(replication(settings.services.cluster))}
    return conf | (spark.client_conf() if spark.recorded_address() == master else {})


def replication(sizes: ClusterSettings) -> int:
    """HDFS's replication in the cluster profile: the DataNodes, up to 3."""
    return min(sizes.datanodes, 3)


def fill_defaults(settings: Settings) -> None:
    """Point the unset settings at the cluster's running services (those that recorded an address).

    Called while the settings load, so it starts nothing: a service not started yet leaves its setting
    unset, and :func:`fjord.fs.shared_root`, :func:`fjord.spark.spark_conf` and the others start it
    when first needed, as the embedded profile does."""
    from fjord.services import service

    if "up" not in settings.services.model_fields_set:
        settings.services.up = list(SERVICE_NAMES)
    if settings.storage.root is None and (hdfs := service("hdfs", settings).recorded_address()):
        settings.storage.root = hdfs + ROOT_PATH
    if settings.metadata.url is None and (postgres := service("postgres", settings).recorded_address()):
        settings.metadata.url = postgres
    master = service("spark", settings).recorded_address()
    if "master" not in settings.spark.model_fields_set and master:
        settings.spark.master = master
