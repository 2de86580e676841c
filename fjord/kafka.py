"""Kafka for every stage: producers, consumers and admin clients built in one place, and topics.

The clients are kafka-python's, configured from ``kafka.bootstrap_servers``; with none configured, the
embedded Apache Kafka (:mod:`fjord.services.kafka`) is found running or started. Topics are created
with their partitions and retention by :func:`ensure_topic`, which is idempotent::

    from fjord import kafka
    kafka.ensure_topic("fraud_inference_log", partitions=1, retention_ms=7 * 86_400_000)
    producer = kafka.producer()
    producer.send("fraud_inference_log", key=b"id", value=b"{}").get(timeout=10)
    for record in kafka.tail("fraud_inference_log", from_beginning=True, limit=5):
        print(record.offset, record.value)
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fjord.config import Settings, get_settings
from fjord.errors import FjordError, NotFoundError

# Sized for loopback and small records: kafka-python batches better with a little linger.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "retries": 5,
    "request_timeout_ms": 10_000,
    "max_block_ms": 10_000,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
    "request_timeout_ms": 15_000,
}


class KafkaError(FjordError):
    """The broker is unreachable or refuses a request (a topic it cannot create, say)."""

    exit_code = 13


@dataclass(frozen=True)
class TopicInfo:
    """A topic as ``fjord kafka topics`` shows it."""

    name: str
    partitions: int
    records: int  # sum over partitions of (end offset - start offset)
    retention_ms: int | None


def bootstrap_servers(settings: Settings | None = None) -> str:
    """``kafka.bootstrap_servers``, or the embedded broker's address (started when not running)."""
    from fjord.services import kafka_bootstrap_servers

    return kafka_bootstrap_servers(settings or get_settings())


def _check_reachable(servers: str, timeout_s: float = 3.0) -> None:
    """Fail in one line when no bootstrap server accepts a connection (kafka-python would retry for
    30 s, logging every attempt)."""
    errors = []
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(exc)
    raise _unreachable(servers, errors[0])


def _unreachable(servers: str, exc: Exception) -> KafkaError:
    return KafkaError(
        f"Kafka at {servers} is unreachable: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
        hint="check kafka.bootstrap_servers, or unset it to use the embedded broker",
    )


def login_options(settings: Settings | None = None, servers: str | None = None) -> dict[str, Any]:
    """kafka-python's options that log in to ``servers`` (default: the configured cluster): the
    embedded broker's generated login, or ``kafka.sasl_username``/``sasl_password``, or none."""
    settings = settings or get_settings()
    if settings.kafka.sasl_username:
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": settings.kafka.sasl_username,
            "sasl_plain_password": settings.kafka.sasl_password or "",
        }
    if settings.kafka.bootstrap_servers:
        return {}
    from fjord.services import service
    from fjord.services.process import read_state

    embedded = service("kafka", settings)
    ports = read_state(embedded.dir / "state.json").get("ports")
    if servers and (not ports or servers != embedded.address_for(ports)):
        return {}  # a broker named explicitly that is not this home's: its own login, not ours
    # kafka-python warns on every client that PLAIN sends the password in the clear: true, over
    # loopback, which no other (non-root) user of the machine can read.
    logging.getLogger("kafka.net.sasl.plain").setLevel(logging.ERROR)
    return embedded.client_options()  # type: ignore[attr-defined]


def spark_options(settings: Settings | None = None) -> dict[str, str]:
    """The Spark Kafka source's options for the configured cluster: its address and login."""
    from fjord.services.kafka import jaas_login

    options = {"kafka.bootstrap.servers": bootstrap_servers(settings)}
    login = login_options(settings)
    if login:
        options |= {
            "kafka.security.protocol": login["security_protocol"],
            "kafka.sasl.mechanism": login["sasl_mechanism"],
            "kafka.sasl.jaas.config": jaas_login(login["sasl_plain_username"], login["sasl_plain_password"]),
        }
    return options


def _client(make: Any, settings: Settings | None, servers: str | None) -> Any:
    """``make(servers, login)`` for the configured cluster (or ``servers``); unreachable: one KafkaError."""
    from kafka.errors import KafkaError as ClientError

    named = servers
    servers = servers or bootstrap_servers(settings)
    _check_reachable(servers)
    try:
        return make(servers, login_options(settings, named))
    except (ClientError, OSError) as exc:
        raise _unreachable(servers, exc) from None


def producer(settings: Settings | None = None, *, servers: str | None = None, **overrides: Any) -> Any:
    """A ``KafkaProducer`` for the configured cluster, or ``servers`` (acks=all, short linger);
    ``overrides`` win."""
    from kafka import KafkaProducer

    options = {**PRODUCER_DEFAULTS, **overrides}
    return _client(
        lambda at, login: KafkaProducer(bootstrap_servers=at, **login, **options), settings, servers
    )


def c_producer(settings: Settings | None = None, *, servers: str | None = None, **config: Any) -> Any:
    """A ``confluent_kafka.Producer`` (librdkafka: encoding, batching and the network in C threads,
    off the GIL) for the configured cluster, or ``servers``, with the same login; ``config`` is
    librdkafka's (``acks``, ``linger.ms``...). For a hot path only: the model server's inference log."""
    from confluent_kafka import KafkaException, Producer

    named = servers
    servers = servers or bootstrap_servers(settings)
    _check_reachable(servers)
    login = login_options(settings, named)
    options = {"bootstrap.servers": servers, **config}
    if login:
        options |= {
            "security.protocol": login["security_protocol"],
            "sasl.mechanism": login["sasl_mechanism"],
            "sasl.username": login["sasl_plain_username"],
            "sasl.password": login["sasl_plain_password"],
        }
    try:
        return Producer(options)
    except KafkaException as exc:
        raise _unreachable(servers, exc) from None


def consumer(*topics: str, settings: Settings | None = None, **overrides: Any) -> Any:
    """A ``KafkaConsumer`` (subscribed to ``topics`` if any are given; no auto-commit by default)."""
    from kafka import KafkaConsumer

    options = {**CONSUMER_DEFAULTS, **overrides}
    return _client(
        lambda at, login: KafkaConsumer(*topics, bootstrap_servers=at, **login, **options), settings, None
    )


def admin(settings: Settings | None = None) -> Any:
    """A ``KafkaAdminClient`` for the configured cluster."""
    from kafka import KafkaAdminClient

    return _client(
        lambda at, login: KafkaAdminClient(bootstrap_servers=at, request_timeout_ms=15_000, **login),
        settings,
        None,
    )


def ensure_topic(
    name: str,
    *,
    partitions: int = 1,
    replication_factor: int | None = None,
    retention_ms: int | None = None,
    settings: Settings | None = None,
) -> bool:
    """Create topic ``name`` unless it exists; True when this call created it. Its replication factor
    is by default the cluster's size up to 3 (1 on the embedded broker, 3 on the cluster profile's).

    An existing topic is left as it is (its partitions and retention are the operator's to change).
    """
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError as ClientError
    from kafka.errors import TopicAlreadyExistsError

    if partitions < 1:
        raise KafkaError(f"topic {name!r}: partitions must be at least 1, not {partitions}")
    configs = {"retention.ms": str(retention_ms)} if retention_ms is not None else {}
    client = admin(settings)
    try:
        if replication_factor is None:
            replication_factor = min(len(client.describe_cluster().get("brokers") or [None]), 3)
        client.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs=configs)], timeout_ms=15_000
        )
        return True
    except TopicAlreadyExistsError:
        return False
    except ClientError as exc:
        raise KafkaError(f"cannot create topic {name!r}: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()


def list_topics(settings: Settings | None = None, *, internal: bool = False) -> list[TopicInfo]:
    """The cluster's topics with their partition count, record count and retention."""
    from kafka import TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType

    client = admin(settings)
    try:
        names = sorted(n for n in client.list_topics() if internal or not n.startswith("__"))
        retention: dict[str, int | None] = dict.fromkeys(names)
        if names:
            resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
            described = client.describe_configs(resources)  # {"topic": {name: {key: {"value": ...}}}}
            for topic, entries in described.get("topic", {}).items():
                value = entries.get("retention.ms", {}).get("value")
                retention[topic] = int(value) if value is not None else None
    finally:
        client.close()
    reader = consumer(settings=settings)
    try:
        infos = []
        for name in names:
            parts = [TopicPartition(name, p) for p in sorted(reader.partitions_for_topic(name) or [])]
            begin, end = reader.beginning_offsets(parts), reader.end_offsets(parts)
            records = sum(end[p] - begin[p] for p in parts)
            infos.append(TopicInfo(name, len(parts), records, retention[name]))
        return infos
    finally:
        reader.close()


def end_offsets(topic: str, settings: Settings | None = None) -> dict[int, int]:
    """Each partition's next offset: where records produced from now on will start."""
    from kafka import TopicPartition

    reader = consumer(settings=settings)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in reader.end_offsets(parts).items()}
    finally:
        reader.close()


def tail(
    topic: str,
    *,
    from_beginning: bool = False,
    start: dict[int, int] | None = None,
    limit: int | None = None,
    timeout_s: float | None = None,
    settings: Settings | None = None,
) -> Iterator[Any]:
    """The records of ``topic`` as they arrive (from its start with ``from_beginning``, or from the
    ``start`` offsets of :func:`end_offsets`), until
    ``limit`` records or ``timeout_s`` seconds without one; partitions are assigned, not joined, so no
    group rebalance delays the first record and no offsets are committed."""
    from kafka import TopicPartition

    reader = consumer(settings=settings)
    try:
        partitions = reader.partitions_for_topic(topic)
        if not partitions:
            raise NotFoundError(f"no Kafka topic {topic!r}", hint="fjord kafka topics lists them")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(assigned)
        if from_beginning:
            reader.seek_to_beginning(*assigned)
        else:
            reader.seek_to_end(*assigned)
        for partition, offset in (start or {}).items():
            reader.seek(TopicPartition(topic, partition), offset)
        seen, last = 0, time.monotonic()
        while limit is None or seen < limit:
            batch = reader.poll(timeout_ms=500, max_records=limit - seen if limit else 500)
            if not batch:
                if timeout_s is not None and time.monotonic() - last > timeout_s:
                    return
                continue
            last = time.monotonic()
            for records in batch.values():
                for record in records:
                    yield record
                    seen += 1
    finally:
        reader.close()
