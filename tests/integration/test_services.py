"""The embedded servers: each starts, is found running by a second start, keeps what it acknowledged
when killed (SIGKILL, as a crash) and started again, and leaves no process behind when stopped.

These tests own their servers (a home of their own): killing the session's shared ones would break
other tests.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fjord.fs import SharedFS
from fjord.services import process
from fjord.services.base import Service
from fjord.services.hdfs import HdfsService
from fjord.services.kafka import KafkaService
from fjord.services.postgres import PostgresService
from fjord.services.redis import RedisService
from fjord.services.s3 import ACCESS_KEY, BUCKET, S3Service
from tests.conftest import run_fjord
from tests.integration.test_kafka import read_all


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
        # Gone, not even a zombie: its exit status was collected.
        assert not any(psutil.pid_exists(pid) for pid in pids), f"{service.name} left a process behind"
        assert not service.status().running


def _new(cls: type[Service], tmp_path: Path, own: list[Service]) -> Service:
    service = cls(tmp_path / "stack", preferred_ports=False)
    own.append(service)
    return service


def test_postgres_keeps_the_registry_across_a_crash(tmp_path: Path, own: list[Service], monkeypatch) -> None:
    import pandas as pd

    import featurestore
    from fjord.config import reset_settings
    from fjord.projects import create_project

    service = _new(PostgresService, tmp_path, own)
    url = service.start()
    assert service.start() == url  # the second start finds it running
    monkeypatch.setenv("FJORD_METADATA__URL", url)
    reset_settings()
    create_project("fraud")
    store = featurestore.connect("fraud")
    tx = store.get_or_create_feature_group("tx", 1, primary_key=["cc_num"], event_time="ts")
    tx.insert(
        pd.DataFrame({"cc_num": [1, 2], "ts": pd.to_datetime(["2026-12-01"] * 2, utc=True), "a": [1.0, 2.0]})
    )
    assert _crash_and_restart(service) == url  # same port again
    # The same process's connection pool recovers (pre-ping), and the registry is whole.
    again = featurestore.connect("fraud").get_feature_group("tx", 1)
    assert list(again.commit_details()) == [0] and again.commit_details()[0]["rows"] == 2
    assert again.statistics["rows"] == 2


def _no_secret_in_sight(service: Service, secret: str) -> None:
    """The generated secret is in the home's mode-600 file, and in no process's command line."""
    assert (service.dir / "credentials.json").stat().st_mode & 0o777 == 0o600
    for pid in service.pids().values():
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            assert secret not in " ".join(proc.cmdline())


def test_postgres_wants_this_homes_password_and_a_trust_cluster_of_old_is_converted(
    tmp_path: Path, own: list[Service]
) -> None:
    """A cluster an earlier Fjord made with trust authentication (any local user was superuser)
    starts with this home's generated password required, and keeps its data."""
    import psycopg

    from fjord.services.postgres import _as_ordinary_user, bin_dir
    from fjord.services.process import run_once

    service = _new(PostgresService, tmp_path, own)
    initdb = [
        str(bin_dir() / "initdb"),
        "-D",
        str(service.data),
        "-U",
        "postgres",
        "--auth=trust",
        "--no-sync",
    ]
    run_once(_as_ordinary_user(initdb), "initdb")  # as the earlier Fjord did
    url = service.start()
    password = service.credentials()["password"]
    assert f"postgres:{password}@127.0.0.1:" in url and len(password) >= 32
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", password="guess", dbname="postgres")
    with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _no_secret_in_sight(service, password)
    home = {"FJORD_HOME": str(tmp_path / "stack")}
    (shown,) = json.loads(run_fjord("services", "status", "postgres", "--json", env=home).stdout)
    assert shown["address"] == url.replace(password, "***")
    assert run_fjord("services", "url", "postgres", env=home).stdout.strip() == url  # asked for: whole


def test_redis_keeps_the_online_store_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    import redis

    from featurestore.online.redis import RedisOnlineStore

    service = _new(RedisService, tmp_path, own)
    url = service.start()
    with pytest.raises(redis.AuthenticationError):  # requirepass: this home's password, or nothing
        redis.Redis.from_url(url.replace(service.credentials()["password"], "guess")).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url.replace(f":{service.credentials()['password']}@", "")).get("x")
    _no_secret_in_sight(service, service.credentials()["password"])
    store = RedisOnlineStore(url, namespace="crash")
    assert store.write("tx_1", [("[1]", 10, b'{"amount":20.5}'), ("[2]", 10, b'{"amount":3.0}')]) == 2
    store = RedisOnlineStore(_crash_and_restart(service), namespace="crash")
    assert store.read([("tx_1", "[2]"), ("tx_1", "[1]")]) == [b'{"amount":3.0}', b'{"amount":20.5}']


def _publish_batch(root: SharedFS) -> None:
    with root.publish("Resources/landing/2026-12-01") as out:
        out.write_bytes("transactions.parquet", b"x" * 300_000)
        out.write_text("labels.csv", "tid,is_fraud\n1,0\n")


def _assert_batch(root: SharedFS) -> None:
    assert root.is_published("Resources/landing/2026-12-01")
    assert root.read_bytes("Resources/landing/2026-12-01/transactions.parquet") == b"x" * 300_000
    assert root.publication("Resources/landing/2026-12-01")["files"] == 2


def test_s3_keeps_published_datasets_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    import s3fs

    from fjord.config import StorageSettings
    from fjord.fs import backend_for

    service = _new(S3Service, tmp_path, own)
    endpoint = service.start()
    _no_secret_in_sight(service, service.credentials()["secret_key"])
    assert (service.dir / "s3.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(PermissionError):  # requests are signed and checked, as on AWS S3
        s3fs.S3FileSystem(key=ACCESS_KEY, secret="wrong", client_kwargs={"endpoint_url": endpoint}).ls(BUCKET)

    def root_at(endpoint: str) -> SharedFS:
        secret = service.credentials()["secret_key"]
        storage = StorageSettings(s3_endpoint_url=endpoint, s3_key=ACCESS_KEY, s3_secret=secret)
        uri = f"s3://{BUCKET}/crash"
        return SharedFS(uri, backend=backend_for(uri, storage))

    _publish_batch(root_at(endpoint))
    _assert_batch(root_at(_crash_and_restart(service)))


@pytest.mark.slow
def test_hdfs_keeps_published_datasets_across_a_crash_of_both_servers(
    tmp_path: Path, own: list[Service]
) -> None:
    service = _new(HdfsService, tmp_path, own)
    uri = service.start()
    assert set(service.pids()) == {"namenode", "datanode"}
    _publish_batch(SharedFS(f"{uri}/fjord"))
    uri = _crash_and_restart(service)
    _assert_batch(SharedFS(f"{uri}/fjord"))
    SharedFS(f"{uri}/fjord").write_text("after-restart.txt", "ok")  # writable again: the DataNode is back


@pytest.mark.slow
def test_kafka_keeps_every_acknowledged_record_across_a_crash(tmp_path: Path, own: list[Service]) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    service = _new(KafkaService, tmp_path, own)
    bootstrap = service.start()
    topic = f"inference-{uuid.uuid4().hex[:6]}"
    login = service.client_options()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **login)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **login)
    futures = [producer.send(topic, key=str(i).encode(), value=f"record-{i}".encode()) for i in range(500)]
    producer.flush()
    acknowledged = [f.get(timeout=30) for f in futures]
    assert len(acknowledged) == 500
    producer.close()

    bootstrap = _crash_and_restart(service)
    values = {record.value for record in read_all(bootstrap, topic, 2, login=login)}
    assert values == {f"record-{i}".encode() for i in range(500)}


def test_kafka_formats_a_cluster_id_that_starts_with_a_dash(tmp_path: Path) -> None:
    """One random cluster id in 64 starts with "-": the storage tool must not read it as an option."""
    service = KafkaService(tmp_path / "stack", preferred_ports=False)
    service.data.mkdir(parents=True)
    (service.dir / "server.properties").write_text(
        "".join(f"{k}={v}\n" for k, v in service.server_properties({"broker": 1, "controller": 2}).items())
    )
    service.format_storage("-AbCdEfGhIjKlMnOpQrStU")
    meta = (service.data / "metadata" / "meta.properties").read_text()
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in meta


def test_a_second_process_finds_the_running_server(tmp_path: Path, own: list[Service]) -> None:
    service = _new(RedisService, tmp_path, own)
    env = {"FJORD_HOME": str(tmp_path / "stack"), "FJORD_SERVICES__PREFERRED_PORTS": "false"}
    started = run_fjord("services", "start", "redis", env=env)
    assert started.returncode == 0, started.stderr
    pids = service.pids()
    address = service.start()  # found running: the address the CLI printed, its password masked
    assert address.replace(service.credentials()["password"], "***") in started.stdout
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


def test_unset_settings_resolve_to_the_embedded_servers(fjord_home: Path, monkeypatch) -> None:
    from fjord.config import reset_settings
    from fjord.services import kafka_bootstrap_servers, redis_url, services

    monkeypatch.setenv("FJORD_SERVICES__PREFERRED_PORTS", "false")
    monkeypatch.setenv("FJORD_KAFKA__BOOTSTRAP_SERVERS", "kafka.example:9092")
    reset_settings()
    assert kafka_bootstrap_servers() == "kafka.example:9092"  # a setting names the cluster's: used as is
    monkeypatch.delenv("FJORD_KAFKA__BOOTSTRAP_SERVERS")
    reset_settings()
    try:
        url = redis_url()
        assert (
            url.startswith("redis://:") and "@127.0.0.1:" in url and services(["redis"])[0].status().running
        )
    finally:
        for service in services(["redis"]):
            service.stop()


_AS_USER = """
import sys
from hdfs_native import Client
client = Client(sys.argv[1])
try:
    print(sorted(status.path for status in client.list_status("/")))
except Exception as exc:
    print(type(exc).__name__, str(exc).splitlines()[0][:200])
"""


def test_hdfs_keeps_other_users_out_of_its_root(hdfs_server: str) -> None:
    """Another user of the machine reaches the NameNode's loopback port, but not Fjord's files: the root
    is mode 700, its owner the NameNode's user, and permissions are on (docs/security.md)."""
    import getpass
    import subprocess
    import sys

    def as_user(name: str) -> str:
        env = {**os.environ, "HADOOP_USER_NAME": name}
        done = subprocess.run([sys.executable, "-c", _AS_USER, hdfs_server], capture_output=True, text=True,
                              env=env, timeout=60, check=True)  # fmt: skip
        return done.stdout.strip()

    assert as_user(getpass.getuser()).startswith("[")  # the owner lists it
    refused = as_user("stranger")
    assert "Permission denied" in refused and "stranger" in refused, refused
