"""What the embedded stack's logins cost where Fjord calls them: MLflow's basic-auth app and Kafka's
SASL/PLAIN handshake.

    python -m bench.auth_cost [--runs 5] [--calls 200]

In one run, on one machine:

- MLflow: two embedded servers of the same release, one as Fjord starts it (basic-auth, a login per
  home, the credential check cached for a minute) and one plain ``mlflow server`` (the limit), each
  called through Fjord's client (``fjord.experiment.tracking.client``) with ``log_metric``, the call
  a training makes per step; the two interleaved run by run, each first in turn. Also each
  server's start-up time.
- Kafka: the embedded broker (SASL/PLAIN); the time to a producer's first acknowledged record
  (bootstrap, handshake, metadata), and the produce rate of 50,000 records of 200 bytes with the
  tuned settings (``linger_ms=5``, ``batch_size=256 KiB``, ``acks=1``), as ``bench/services.py``
  measured it before logins (its committed results are the reference: not the same run).

Raw results go to ``bench/results/auth_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "auth_cost.json"


def _plain_mlflow(home: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` without an app: what the embedded server was before logins."""
    from fjord.services.process import free_port

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
           "--default-artifact-root", (home / "artifacts").as_uri(), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (home / "plain.log").open("ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return process, uri
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the plain MLflow server did not start")


def _per_call_ms(uri: str, calls: int) -> float:
    from fjord.experiment.tracking import client

    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name("bench") or None
    experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment("bench")
    run = mlflow.create_run(experiment_id)
    began = time.perf_counter()
    for step in range(calls):
        mlflow.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    return (time.perf_counter() - began) / calls * 1000


def bench_mlflow(runs: int, calls: int) -> dict[str, Any]:
    from fjord.config import reset_settings
    from fjord.experiment.tracking import start_server, stop_server

    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        home = Path(tmp) / "fjord"
        os.environ["FJORD_HOME"] = str(home)
        reset_settings()
        began = time.perf_counter()
        with_login = start_server()
        start_login_s = time.perf_counter() - began
        plain_home = Path(tmp) / "plain"
        plain_home.mkdir()
        began = time.perf_counter()
        process, plain = _plain_mlflow(plain_home)
        start_plain_s = time.perf_counter() - began
        ms: dict[str, list[float]] = {"basic_auth": [], "plain": []}
        try:
            _per_call_ms(with_login, 20), _per_call_ms(plain, 20)  # warm both
            for run in range(runs):
                order = [("basic_auth", with_login), ("plain", plain)]
                for label, uri in order if run % 2 == 0 else order[::-1]:
                    ms[label].append(_per_call_ms(uri, calls))
        finally:
            stop_server()
            os.killpg(process.pid, signal.SIGTERM)
    return {"per_call_ms": ms, "start_s": {"basic_auth": start_login_s, "plain": start_plain_s}}


def bench_kafka(runs: int, records: int = 50_000) -> dict[str, Any]:
    from fjord import kafka
    from fjord.config import reset_settings

    with tempfile.TemporaryDirectory(prefix="bench-auth-kafka-") as tmp:
        os.environ["FJORD_HOME"] = str(Path(tmp) / "fjord")
        reset_settings()
        kafka.bootstrap_servers()  # the embedded broker, started
        first, rates = [], []
        value = b"x" * 200
        try:
            for run in range(runs):
                began = time.perf_counter()
                producer = kafka.producer(acks=1, linger_ms=5, batch_size=256 * 1024)
                producer.send(f"bench-{run}", value).get(timeout=30)
                first.append(time.perf_counter() - began)
                began = time.perf_counter()
                for _ in range(records):
                    producer.send(f"bench-{run}", value)
                producer.flush()
                rates.append(records / (time.perf_counter() - began))
                producer.close()
        finally:
            from fjord.services import service

            service("kafka").stop()
    return {"first_record_s": first, "produce_per_s": rates, "records": records}


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("FJORD_SERVICES__PREFERRED_PORTS", "false")
    mlflow = bench_mlflow(args.runs, args.calls)
    kafka_result = bench_kafka(args.runs)
    ms = mlflow["per_call_ms"]
    ratio = statistics.median(ms["basic_auth"]) / statistics.median(ms["plain"])
    print(f"MLflow log_metric, ms per call: basic-auth {_summary(ms['basic_auth'])}, "
          f"plain {_summary(ms['plain'])}, ratio {ratio:.3f}")  # fmt: skip
    start = mlflow["start_s"]
    print(f"MLflow start, s: basic-auth {start['basic_auth']:.1f}, plain {start['plain']:.1f}")
    print(f"Kafka (SASL/PLAIN) first acknowledged record, s: {_summary(kafka_result['first_record_s'])}; "
          f"produce, records/s: {_summary(kafka_result['produce_per_s'])}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {"date": time.strftime("%Y-%m-%d"), "runs": args.runs, "calls": args.calls, "mlflow": mlflow,
              "kafka": kafka_result, "ratio_mlflow": ratio}  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
