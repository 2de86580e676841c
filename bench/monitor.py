"""The streaming monitor: sustained throughput, restart exactness, and drift-to-retraining latency.

- **Throughput**: a topic pre-filled with ``--records`` inference log records of a model with 15
  input features (a request and a response record per call, one row each, as the model server logs
  them) is monitored to the end (``available_now``, ``maxOffsetsPerTrigger`` = ``--batch``), on the
  embedded Kafka and Spark ``local[2]``. Records per second over the micro-batches (Spark's start is
  not counted). **The limit**: the same client (Spark's Kafka source, the same batches) on the same
  topic doing nothing but count the records. **The archive's cost**: the monitor runs twice on each
  topic, with the inference archive off and on (which goes first alternates between runs).
- **Restart**: a monitor process over a pre-filled topic is SIGKILLed ``--kills`` times at random
  moments and started again; at the end each window's request count is compared with what was
  produced into it: records lost and counted twice.
- **Drift to retraining**: read from a ``fjord run`` log (``--run-log``, the ``.tasks.json`` the main
  job writes): seconds from the first drifted request to the alert, and to the ``fraud_retrain``
  run Airflow created.

Run: ``python -m bench.monitor --repeat 3`` (``make bench``). Writes ``bench/results/monitor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WINDOW_S = 10
FEATURES = ["x", "y", *(f"f{i}" for i in range(1, 14))]


def produce(bootstrap: str, topic: str, records: int, seconds: float) -> Counter:
    """``records`` log records (request + response per call) spread over ``seconds`` of event time
    ending now; the response count per window start (ms)."""
    import numpy as np
    import orjson
    from kafka import KafkaProducer

    from fjord import kafka

    kafka.ensure_topic(topic, partitions=1)  # as the model server creates its log topic
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1, **kafka.login_options()
    )
    rng = np.random.default_rng(1)
    end = int(time.time() * 1000)
    start = end - int(seconds * 1000)
    calls = records // 2
    per_window: Counter = Counter()
    stamps = np.sort(rng.integers(start, end, calls))
    values = rng.normal(0, 1, (calls, len(FEATURES)))
    for i in range(calls):
        ts = int(stamps[i])
        head = {
            "inferenceId": uuid.uuid4().hex,
            "modelName": "m",
            "modelVersion": 1,
            "signatureName": "serving_default",
            "api": "rest",
            "requestTimestamp": ts,
        }
        inputs = {name: [round(float(v), 4)] for name, v in zip(FEATURES, values[i], strict=True)}
        producer.send(topic, orjson.dumps({**head, "type": "request", "inputs": inputs}))
        response = {
            **head,
            "type": "response",
            "responseTimestamp": ts + 2,
            "latencyMs": 1.7,
            "httpCode": 200,
            "outputs": {"sum": [float(abs(values[i][0]) / 4)]},
        }
        producer.send(topic, orjson.dumps(response))
        per_window[ts - ts % (WINDOW_S * 1000)] += 1
    producer.flush()
    producer.close()
    return per_window


def spark_consume_rate(
    spark: Any, bootstrap: str, topic: str, batch: int, checkpoint: Path
) -> dict[str, float]:
    """The limit: Spark's Kafka source on the topic, as the monitor reads it (the same options and
    split into tasks), counting each micro-batch and nothing else."""
    from fjord.kafka import spark_options
    from jobs.monitor.job import kafka_source

    assert spark_options()["kafka.bootstrap.servers"] == bootstrap
    counted, began = [0], [0.0]

    def count(frame: Any, _batch_id: int) -> None:
        began[0] = began[0] or time.monotonic()
        counted[0] += frame.count()

    query = (
        kafka_source(spark, topic, "earliest", batch)
        .load()
        .writeStream.foreachBatch(count)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.monotonic() - began[0]
    return {"records": counted[0], "seconds": seconds, "records_per_s": counted[0] / seconds}


def bench_throughput(bootstrap: str, records: int, batch: int, repeat: int) -> dict[str, Any]:
    from fjord.projects import get_project
    from fjord.spark import get_spark
    from jobs.monitor.job import MonitorSpec, run
    from tests.integration.monitor_setup import monitored_project

    monitored_project("bench", versions=(1,), extra_features=13)
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    limits = []
    for attempt in range(repeat):
        topic = f"m_bench_{uuid.uuid4().hex[:6]}"
        produce(bootstrap, topic, records, seconds=120)
        for archive in (False, True) if attempt % 2 == 0 else (True, False):
            spec = MonitorSpec(
                project="bench",
                model_name="m",
                topic=topic,
                window_seconds=WINDOW_S,
                lateness_seconds=WINDOW_S,
                max_records_per_trigger=batch,
                available_now=True,
                prediction_output="sum",
                notify_airflow=False,
                archive=archive,
            )
            result = run(spec)
            runs[archive].append(
                {
                    "records": result.records,
                    "batches": result.batches,
                    "seconds": result.busy_seconds,
                    "records_per_s": result.records_per_second,
                }
            )
            # the results and the archive are per model: cleared between runs
            for rel in ("Resources/monitoring/m", "Resources/inference/m"):
                if get_project("bench").fs.exists(rel):
                    get_project("bench").fs.rm(rel, recursive=True)
        with tempfile.TemporaryDirectory() as tmp:
            limits.append(spark_consume_rate(get_spark(), bootstrap, topic, batch, Path(tmp) / "cp"))
        print(
            f"  run {attempt + 1}: monitor {runs[False][-1]['records_per_s']:,.0f} rec/s, with the archive "
            f"{runs[True][-1]['records_per_s']:,.0f} rec/s ({result.batches} batches), "
            f"Spark Kafka source alone {limits[-1]['records_per_s']:,.0f} rec/s",
            flush=True,
        )
    return {
        "monitor": runs[False],
        "monitor_with_archive": runs[True],
        "spark_kafka_source_count_only": limits,
    }


def bench_restart(bootstrap: str, records: int, kills: int) -> dict[str, Any]:
    from fjord.projects import get_project
    from jobs.monitor.store import MonitorStore

    topic = f"m_restart_{uuid.uuid4().hex[:6]}"
    expected = produce(bootstrap, topic, records, seconds=120)
    argv = [
        sys.executable,
        "-m",
        "jobs.monitor.main",
        "--project=bench",
        "--model-name=m",
        f"--topic={topic}",
        f"--window-seconds={WINDOW_S}",
        f"--lateness-seconds={WINDOW_S}",
        "--trigger-seconds=0.5",
        "--max-records-per-trigger=5000",
        "--prediction-output=sum",
        "--no-notify-airflow",
    ]
    store = MonitorStore(get_project("bench").fs, "m")
    rng = random.Random(7)
    for kill in range(kills):
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        batches = max((w["batch_id"] for w in store.windows()), default=-1)
        while max((w["batch_id"] for w in store.windows()), default=-1) < batches + 2:
            time.sleep(0.3)
        time.sleep(rng.uniform(0, 2))  # anywhere inside a micro-batch
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        print(f"  killed the monitor mid-stream ({kill + 1}/{kills})", flush=True)
    final = subprocess.run([*argv, "--available-now"], cwd=ROOT, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    counted = Counter({int(w["window_start"].timestamp() * 1000): w["requests"] for w in store.windows()})
    lost = sum((Counter(expected) - counted).values())
    doubled = sum((counted - Counter(expected)).values())
    return {
        "records": records,
        "kills": kills,
        "responses_produced": sum(expected.values()),
        "responses_counted": sum(counted.values()),
        "lost": lost,
        "double_counted": doubled,
    }


def drift_latency(run_log: Path | None) -> dict[str, Any] | None:
    if run_log is None:
        return None
    tasks = json.loads(run_log.read_text())
    return tasks.get("monitor")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=100_000, help="maxOffsetsPerTrigger")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3, help="0: no restart bench")
    parser.add_argument("--run-log", type=Path, default=None, help="a fjord run's .tasks.json")
    parser.add_argument("--label", default=None, help="keep the results under this key, beside the others")
    args = parser.parse_args()

    from fjord.config import reset_settings
    from fjord.services import service_at

    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as home:
        os.environ.update({"FJORD_HOME": str(Path(home) / "fjord"), "SPARK_LOCAL_IP": "127.0.0.1"})
        reset_settings()
        kafka = service_at("kafka", Path(home), preferred_ports=False)
        bootstrap = kafka.start()
        login = kafka.client_options()  # type: ignore[attr-defined]
        os.environ["FJORD_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
        os.environ["FJORD_KAFKA__SASL_USERNAME"] = login["sasl_plain_username"]
        os.environ["FJORD_KAFKA__SASL_PASSWORD"] = login["sasl_plain_password"]
        reset_settings()
        try:
            print(
                f"throughput: {args.records:,} records, micro-batches of {args.batch:,}, {args.repeat} runs"
            )
            throughput = bench_throughput(bootstrap, args.records, args.batch, args.repeat)
            restart = None
            if args.kills:
                print(f"restart: {args.kills} SIGKILLs over {args.records // 4:,} records")
                restart = bench_restart(bootstrap, args.records // 4, args.kills)
        finally:
            from fjord.spark import stop_spark

            stop_spark()  # before the home goes: Spark's event log is closed in it
            kafka.stop()
    ours = [r["records_per_s"] for r in throughput["monitor"]]
    archived = [r["records_per_s"] for r in throughput["monitor_with_archive"]]
    limit = [r["records_per_s"] for r in throughput["spark_kafka_source_count_only"]]
    result = {
        "machine": f"{os.cpu_count()} cores",
        "throughput": {
            **throughput,
            "monitor_records_per_s": _spread(ours),
            "monitor_with_archive_records_per_s": _spread(archived),
            "archive_ratio": statistics.median(archived) / statistics.median(ours),
            "archive_ratio_per_run": [a / o for a, o in zip(archived, ours, strict=True)],
            "limit_records_per_s": _spread(limit),
            "ratio_to_limit": statistics.median(ours) / statistics.median(limit),
        },
        "restart": restart,
        "drift_to_retraining": drift_latency(args.run_log),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "monitor.json"
    kept = json.loads(path.read_text()) if path.exists() else {}  # earlier runs' figures stay
    if args.label:
        kept[args.label] = {"args": vars(args) | {"run_log": str(args.run_log or "")}, **result}
    else:
        kept.update(result)
    path.write_text(json.dumps(kept, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "throughput"}, indent=2))
    ratio = result["throughput"]["archive_ratio"]
    print(
        f"monitor {statistics.median(ours):,.0f} rec/s, with the archive {statistics.median(archived):,.0f} "
        f"({ratio:.2f}x); limit {statistics.median(limit):,.0f} rec/s"
    )


if __name__ == "__main__":
    main()
