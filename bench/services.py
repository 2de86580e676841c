"""The embedded stack's servers: start-up (cold and warm), memory at rest, and Kafka client rates.

- Start-up, per service: *cold* is a new home (``initdb``, ``kafka-storage format``, NameNode format
  included) until the service answers its health check; *warm* is a start over the data the cold
  start left (stopped cleanly first). Each run in a fresh home, ``--repeat`` times.
- Memory at rest: the resident set of the service's whole process tree, 5 s after a warm start.
- Kafka: kafka-python producing and then consuming 200-byte records against the embedded Apache
  Kafka on loopback, with the client's defaults (as ``../shared/STACK_NOTES.md`` measured Tansu) and
  with batching raised (``linger_ms=5``, ``batch_size=256 KiB``, ``max_partition_fetch_bytes=8 MiB``).
  The peer is the Tansu figure of STACK_NOTES (16k/s produce, 26k/s consume, same client, same record
  size), which cannot run here beside it: Tansu came from a wheel this project does not depend on.

Run: ``python -m bench.services --repeat 3`` (``make bench``). Prints a Markdown table and writes
``bench/results/services.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from fjord.services import SERVICE_NAMES, Service, service_at

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RECORD = b"x" * 200


def _rss_mb(service: Service) -> float:
    total = 0
    for pid in service.pids().values():
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    return total / 2**20


def bench_startup(name: str, repeat: int) -> dict[str, list[float]]:
    cold, warm, rss = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as home:
            service = service_at(name, Path(home), preferred_ports=False)
            began = time.perf_counter()
            service.start()
            cold.append(time.perf_counter() - began)
            service.stop()
            began = time.perf_counter()
            service.start()
            warm.append(time.perf_counter() - began)
            time.sleep(5)
            rss.append(_rss_mb(service))
            service.stop()
    return {"cold_s": cold, "warm_s": warm, "rss_mb": rss}


def _produce(bootstrap: str, topic: str, count: int, tuned: bool, login: dict) -> float:
    from kafka import KafkaProducer

    options = {"linger_ms": 5, "batch_size": 256 * 1024} if tuned else {}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, **options, **login)
    began = time.perf_counter()
    for _ in range(count):
        producer.send(topic, RECORD)
    producer.flush()
    seconds = time.perf_counter() - began
    producer.close()
    return count / seconds


def _consume(bootstrap: str, topic: str, count: int, tuned: bool, login: dict) -> float:
    from kafka import KafkaConsumer, TopicPartition

    options = {"max_partition_fetch_bytes": 8 * 2**20, "fetch_max_bytes": 64 * 2**20} if tuned else {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=20_000, **options, **login)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    began, seen = time.perf_counter(), 0
    for _ in consumer:
        seen += 1
        if seen == count:
            break
    seconds = time.perf_counter() - began
    consumer.close()
    assert seen == count, f"consumed {seen} of {count}"
    return count / seconds


def bench_kafka(repeat: int, count: int) -> dict[str, list[float]]:
    from kafka.admin import KafkaAdminClient, NewTopic

    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-kafka-rates-") as home:
        service = service_at("kafka", Path(home), preferred_ports=False)
        bootstrap = service.start()
        login = service.client_options()  # type: ignore[attr-defined]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **login)
        try:
            for _ in range(repeat):
                for tuned in (False, True):
                    label = "tuned" if tuned else "default"
                    topic = f"bench-{uuid.uuid4().hex[:8]}"
                    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
                    produced = _produce(bootstrap, topic, count, tuned, login)
                    rates.setdefault(f"produce_{label}", []).append(produced)
                    consumed = _consume(bootstrap, topic, count, tuned, login)
                    rates.setdefault(f"consume_{label}", []).append(consumed)
        finally:
            admin.close()
            service.stop()
    return rates


def _fmt(values: list[float], digits: int = 1) -> str:
    spread = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.{digits}f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--services", nargs="*", default=list(SERVICE_NAMES))
    args = parser.parse_args()
    startup = {name: bench_startup(name, args.repeat) for name in args.services}
    kafka = bench_kafka(args.repeat, args.records)
    results = {"repeat": args.repeat, "records": args.records, "startup": startup, "kafka_rates": kafka}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "services.json").write_text(json.dumps(results, indent=2))
    print("| service | cold start (s) | warm start (s) | memory at rest (MB) |")
    print("|---|---|---|---|")
    for name, figures in startup.items():
        cold, warm, rss = _fmt(figures["cold_s"], 2), _fmt(figures["warm_s"], 2), _fmt(figures["rss_mb"], 0)
        print(f"| {name} | {cold} | {warm} | {rss} |")
    print()
    print("| kafka-python, 200-byte records | records/s, median (min-max) |")
    print("|---|---|")
    for label, values in kafka.items():
        print(f"| {label.replace('_', ' ')} | {_fmt(values, 0)} |")


if __name__ == "__main__":
    main()
