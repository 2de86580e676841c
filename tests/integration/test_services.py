"""The embedded servers: each starts, is found running by a second start, keeps what it acknowledged
when killed (SIGKILL, as a crash) and started again, and leaves no process behind when stopped.

These tests own their servers (a home of their own): killing the session's shared ones would break
other tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fjord.services import process
from fjord.services.base import Service
from fjord.services.hdfs import HdfsService
from fjord.services.kafka import KafkaService
from fjord.services.postgres import PostgresService
from fjord.services.redis import RedisService
from fjord.services.s3 import ACCESS_KEY, BUCKET, SECRET_KEY, S3Service
from tests.conftest import run_fjord


def _crash_and_restart(service: Service) -> str:
    pids = service.pids()
    assert pids, f"{service.name} is not running"
    for pid in pids.values():
        process.kill_group(pid)
    assert not service.status().running
    address = service.start()
    assert set(service.pids().values()).isdisjoint(pids.values()), "the restart must be new processes"
    return address


@pytest.fixture
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    """Services started by one test, stopped after it; it checks that no process outlives them."""
    started: list[Service] = []
    yield started
    for service in started:
        pids = list(service.pids().values())
        service.stop()
        assert not any(process.alive(pid) for pid in pids), f"{service.name} left a process behind"
        assert not service.status().running


def _new(cls: type[Service], tmp_path: Path, own: list[Service]) -> Service:
    service = cls(tmp_path / "stack", preferred_ports=False)
    own.append(service)
    return service


def test_postgres_keeps_committed_rows_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    import psycopg

    service = _new(PostgresService, tmp_path, own)
    url = service.start()
    assert service.start() == url  # the second start finds it running
    dsn = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE registry (name text PRIMARY KEY)")
        conn.execute("INSERT INTO registry VALUES ('fraud')")
    assert _crash_and_restart(service) == url  # same port again
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT name FROM registry").fetchall() == [("fraud",)]


def test_redis_keeps_acknowledged_writes_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    import redis

    service = _new(RedisService, tmp_path, own)
    url = service.start()
    client = redis.Redis.from_url(url)
    client.set("fraud:1", b"0.93")
    client.hset("fraud:vector", mapping={"a": 1, "b": 2})
    url = _crash_and_restart(service)
    client = redis.Redis.from_url(url)
    assert client.get("fraud:1") == b"0.93"
    assert client.hgetall("fraud:vector") == {b"a": b"1", b"b": b"2"}


def test_s3_keeps_published_objects_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    import s3fs

    service = _new(S3Service, tmp_path, own)
    endpoint = service.start()
    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": endpoint})
    with pytest.raises(PermissionError):  # requests are signed and checked, as on AWS S3
        s3fs.S3FileSystem(key=ACCESS_KEY, secret="wrong", client_kwargs={"endpoint_url": endpoint}).ls(BUCKET)
    fs.pipe(f"{BUCKET}/landing/2026-12-01/_SUCCESS", b"")
    fs.pipe(f"{BUCKET}/landing/2026-12-01/part-0.parquet", b"x" * 100_000)
    endpoint = _crash_and_restart(service)
    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True
    )
    assert fs.cat(f"{BUCKET}/landing/2026-12-01/part-0.parquet") == b"x" * 100_000
    assert fs.exists(f"{BUCKET}/landing/2026-12-01/_SUCCESS")


@pytest.mark.slow
def test_hdfs_keeps_closed_files_across_a_crash_of_both_servers(tmp_path: Path, own: list[Service]) -> None:
    from hdfs_native import Client

    service = _new(HdfsService, tmp_path, own)
    uri = service.start()
    assert set(service.pids()) == {"namenode", "datanode"}
    client = Client(uri)
    client.mkdirs("/fjord/landing", create_parent=True)
    with client.create("/fjord/landing/batch.csv") as out:
        out.write(b"cc_num,amount\n1,20.5\n" * 10_000)
    uri = _crash_and_restart(service)
    with Client(uri).read("/fjord/landing/batch.csv") as data:
        assert data.read() == b"cc_num,amount\n1,20.5\n" * 10_000
    with Client(uri).create("/fjord/after-restart") as out:  # writable again: the DataNode is back
        out.write(b"ok")


@pytest.mark.slow
def test_kafka_keeps_every_acknowledged_record_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    service = _new(KafkaService, tmp_path, own)
    bootstrap = service.start()
    topic = f"inference-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=str(i).encode(), value=f"record-{i}".encode()) for i in range(500)]
    producer.flush()
    acknowledged = [f.get(timeout=30) for f in futures]
    assert len(acknowledged) == 500
    producer.close()

    bootstrap = _crash_and_restart(service)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, consumer_timeout_ms=10_000, auto_offset_reset="earliest"
    )
    partitions = [TopicPartition(topic, p) for p in (0, 1)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    values = {record.value for record in consumer}
    consumer.close()
    assert values == {f"record-{i}".encode() for i in range(500)}


def test_a_second_process_finds_the_running_server(tmp_path: Path, own: list[Service]) -> None:
    service = _new(RedisService, tmp_path, own)
    env = {"FJORD_HOME": str(tmp_path / "stack"), "FJORD_SERVICES__PREFERRED_PORTS": "false"}
    started = run_fjord("services", "start", "redis", env=env)
    assert started.returncode == 0, started.stderr
    pids = service.pids()
    assert service.start() in started.stdout  # found running: the address the CLI printed
    assert service.pids() == pids
    listed = run_fjord("services", "status", "redis", env=env)
    assert "running" in listed.stdout and str(pids["redis"]) in listed.stdout
    stopped = run_fjord("services", "stop", "redis", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not process.alive(pids["redis"])


def test_services_cli_bad_input(tmp_path: Path) -> None:
    env = {"FJORD_HOME": str(tmp_path / "stack")}
    unknown = run_fjord("services", "start", "zookeeper", env=env)
    assert unknown.returncode == 3
    assert "no service 'zookeeper'" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    usage = run_fjord("services", "logs", env=env)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    status = run_fjord("services", "status", env=env)
    assert status.returncode == 0 and "running" not in status.stdout


def test_a_server_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    from fjord.errors import ServiceError

    service = RedisService(tmp_path / "stack", preferred_ports=False)
    service.start()
    service.stop()
    for manifest in (service.data / "appendonlydir").glob("*.manifest"):
        manifest.write_text("not a manifest\n")  # a damaged append-only file: the server refuses it
    with pytest.raises(ServiceError, match=r"redis \(redis\) exited while starting: .*\(log: .*redis.log\)"):
        service.start()
    assert not service.status().running and not service.pids()
