"""fjord.kafka and ``fjord kafka`` against the embedded Apache Kafka, checked by an independent
kafka-python client; the broker restarts in between and nothing acknowledged is lost."""

from __future__ import annotations

import json
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from fjord import kafka
from fjord.services import service_at
from tests.conftest import run_fjord

pytestmark = pytest.mark.slow


def read_all(
    bootstrap: str, topic: str, partitions: int, timeout: float = 60, login: dict | None = None
) -> list:
    """Every record ``topic`` holds now, read up to each partition's end offset by an independent
    consumer (no idle timeout to sit out); it logs in as this test's settings do, or with ``login``."""
    import time

    from fjord.kafka import login_options

    login = login_options() if login is None else login
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **login)
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    end = consumer.end_offsets(parts)
    deadline = time.monotonic() + timeout
    records = []
    while any(consumer.position(p) < end[p] for p in parts):
        assert time.monotonic() < deadline, f"{topic}: not read to its end offsets {end} in {timeout} s"
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def test_topics_are_created_once_with_partitions_and_retention(broker):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    assert kafka.ensure_topic(topic, partitions=3, retention_ms=3_600_000) is True
    assert kafka.ensure_topic(topic, partitions=3) is False
    info = next(t for t in kafka.list_topics() if t.name == topic)
    assert (info.partitions, info.records, info.retention_ms) == (3, 0, 3_600_000)


def test_acknowledged_records_survive_a_broker_restart(broker, services_home):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    kafka.ensure_topic(topic, partitions=2)
    producer = kafka.producer()
    for i in range(200):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"i": i}).encode()).get(timeout=30)
    producer.close()
    server = service_at("kafka", services_home, preferred_ports=False)
    server.stop()
    assert server.start() == broker  # the same port: clients keep their bootstrap address
    producer = kafka.producer()
    for i in range(200, 300):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"i": i}).encode()).get(timeout=60)
    producer.close()
    records = read_all(broker, topic, 2)
    assert sorted(json.loads(r.value)["i"] for r in records) == list(range(300))
    assert next(t for t in kafka.list_topics() if t.name == topic).records == 300


def test_the_cli_lists_and_tails_topics(broker):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    created = run_fjord("kafka", "create", topic, "--partitions", "2", "--retention-hours", "2")
    assert created.returncode == 0 and "created" in created.stdout
    producer = kafka.producer()
    for i in range(5):
        producer.send(topic, key=b"k", value=f"v{i}".encode())
    producer.flush()
    listed = run_fjord("kafka", "topics", "--json")
    entry = next(t for t in json.loads(listed.stdout) if t["name"] == topic)
    assert entry == {"name": topic, "partitions": 2, "records": 5, "retention_ms": 7_200_000}
    tail = run_fjord("kafka", "tail", topic, "--from-beginning", "--max", "5")
    assert tail.returncode == 0 and [line.split("\t")[2] for line in tail.stdout.splitlines()] == [
        f"v{i}" for i in range(5)
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["kafka", "tail", "no-such-topic", "--timeout", "1"], 3, "no Kafka topic 'no-such-topic'"),
        (["kafka", "create", "x", "--partitions", "0"], 2, "Invalid value for '--partitions'"),
        (["kafka", "tail"], 2, "Missing argument"),
        (["kafka", "nope"], 2, "No such command 'nope'"),
    ],
)
def test_cli_bad_input_is_one_clear_error(broker, args, code, message):
    result = run_fjord(*args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_an_unreachable_cluster_is_one_line(monkeypatch):
    monkeypatch.setenv("FJORD_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = run_fjord("kafka", "topics")
    assert result.returncode == 13
    assert result.stderr.count("\n") == 1 and "Kafka at 127.0.0.1:9 is unreachable" in result.stderr


def test_the_broker_refuses_a_client_without_its_login(broker, kafka_login, services_home):
    """Another user of the machine reaches the broker's loopback port, but not without the home's
    login: neither a plain client nor a wrong password reads or writes a record."""
    import stat
    import subprocess

    from kafka import KafkaProducer
    from kafka.errors import KafkaError as ClientError

    with pytest.raises(ClientError):  # PLAINTEXT against SASL: the handshake is refused
        KafkaProducer(bootstrap_servers=broker, max_block_ms=3000, bootstrap_timeout_ms=3000)
    wrong = {**kafka_login, "sasl_plain_password": "not-the-password"}
    with pytest.raises(ClientError):
        KafkaConsumer(bootstrap_servers=broker, bootstrap_timeout_ms=3000, **wrong).topics()
    assert kafka.admin().list_topics() is not None  # this test's settings carry the login

    # The broker reads the login from its own mode-600 file: in no command line.
    service = service_at("kafka", services_home, preferred_ports=False)
    properties = service.dir / "server.properties"
    assert stat.S_IMODE(properties.stat().st_mode) == 0o600
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert kafka_login["sasl_plain_password"] not in processes
