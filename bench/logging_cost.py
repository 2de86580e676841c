"""What inference logging costs the served calls: the model server at 16 clients logging every call
(ALL: a request and a response record per call, the embedded Kafka) against the same server logging
nothing (NONE), in the same run, interleaved.

    python -m bench.logging_cost [--runs 5] [--seconds 10]

The model is the fraud model's shape (bench/shadow.py), the request its 13 inputs (no online lookup):
the lightest call, so logging's share of the work is the largest it gets. After the runs, every
record the ALL server was asked to log is counted on its topic: the cost is measured with nothing
lost. Then a broker stop and restart while ``wrk`` runs: failed requests, and records lost. Goal
(issue 27): logging ALL keeps at least 0.9x of NONE's throughput. Raw: ``bench/results/logging_cost.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.serve import REPO, Server, _free_port, wrk
from bench.shadow import _monitoring, medians, serving_bench

RESULTS = REPO / "bench" / "results" / "logging_cost.json"


def _server(home: Path, base: Path, bootstrap: str, mode: str, topic: str) -> tuple[Server, str]:
    port = _free_port()
    argv = [
        sys.executable, "-m", "jobs.serve.server", "--port=0", f"--rest_api_port={port}",
        "--model_name=fraud", f"--model_base_path={base}", "--completion_marker=_SUCCESS",
        f"--inference_logging={mode}", f"--kafka_bootstrap_servers={bootstrap}", f"--kafka_topic={topic}",
        f"--monitoring_config_file={_monitoring(home)}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models/fraud"
    return Server(argv, url, home / f"{mode}-{topic}.log"), url


def _sent(url: str) -> dict[str, float]:
    """The server's inference log counters (sent, dropped)."""
    text = httpx.get(url.replace("/v1/models/fraud", "/monitoring/prometheus/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("fjord_serving_inference_log_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _records(topic: str) -> int:
    from fjord import kafka

    return sum(kafka.end_offsets(topic).values())


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and its children so far."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def _answered(runs: list[dict[str, Any]]) -> int:
    return sum(int(r["requests"]) - int(r["failed"]) - int(r["socket_errors"]) for r in runs)


def _settled(topic: str, expected: int, timeout_s: float = 120.0) -> int:
    """The records on ``topic`` once ``expected`` arrived, or it stopped growing for 10 s."""
    deadline, last, since = time.monotonic() + timeout_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = _records(topic)
        if now >= expected:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 10:
            return now
        time.sleep(0.5)
    return _records(topic)


def main() -> None:
    bench = serving_bench(__doc__, 5, "bench-logging-", versions=1)
    args, home, base, broker, body, results = (
        bench.args,
        bench.home,
        bench.base,
        bench.broker,
        bench.body,
        bench.results,
    )
    try:
        topic = "bench_log_all"
        servers = {
            m: _server(home, base, bench.bootstrap, m, f"bench_log_{m.lower()}") for m in ("NONE", "ALL")
        }
        try:
            for _, url in servers.values():
                wrk(f"{url}:predict", body, 16, 2)  # warm: the model, the producer, the topic
            time.sleep(3)  # the warm-up's records delivered
            before = _records(topic)
            runs: dict[str, list[dict[str, Any]]] = {"NONE": [], "ALL": []}
            (broker_pid,) = broker.pids().values()
            cpu: dict[str, dict[str, float]] = {m: {"server": 0.0, "broker": 0.0} for m in servers}
            for _ in range(args.runs):  # interleaved: a slow minute of the machine hits both
                for mode, (server, url) in servers.items():
                    before_cpu = (_cpu_seconds(server.process.pid), _cpu_seconds(broker_pid))
                    runs[mode].append(wrk(f"{url}:predict", body, 16, args.seconds))
                    cpu[mode]["server"] += _cpu_seconds(server.process.pid) - before_cpu[0]
                    cpu[mode]["broker"] += _cpu_seconds(broker_pid) - before_cpu[1]
            # where the 2 cores went: the server's process and the broker's JVM, per second of load
            results["cpu_per_second"] = {
                m: {k: round(v / (args.runs * args.seconds), 3) for k, v in c.items()} for m, c in cpu.items()
            }
            all_url = servers["ALL"][1]
            expected = 2 * _answered(runs["ALL"])  # a request and a response record per answered call
            delivered = _settled(topic, before + expected) - before
            results["delivered"] = {"records_expected": expected, "records_on_topic": delivered,
                                    "counters": _sent(all_url)}  # fmt: skip

            # A broker stop and restart while wrk runs: the calls answered, the records lost.
            def restart() -> None:
                time.sleep(4)
                broker.stop()
                time.sleep(5)
                broker.start()

            before = _records(topic)
            thread = threading.Thread(target=restart)
            thread.start()
            outcome = wrk(f"{all_url}:predict", body, 16, 20)
            thread.join()
            expected = 2 * _answered([outcome])
            results["broker_restart_under_load"] = {
                "wrk": outcome, "records_expected": expected,
                "records_on_topic": _settled(topic, before + expected) - before, "counters": _sent(all_url),
            }  # fmt: skip
        finally:
            for server, _ in servers.values():
                server.stop()
    finally:
        broker.stop()
    for mode, mode_runs in runs.items():
        results[mode] = medians(mode_runs)
    ratios = [a["rps"] / n["rps"] for n, a in zip(runs["NONE"], runs["ALL"], strict=True)]
    results["ratio"], results["ratios"] = statistics.median(ratios), ratios
    results["goal"] = {"min_ratio": 0.9, "met": results["ratio"] >= 0.9}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    restart = results["broker_restart_under_load"]
    cpu = results["cpu_per_second"]
    print(
        f"cores busy: NONE server {cpu['NONE']['server']:.2f} broker {cpu['NONE']['broker']:.2f}; "
        f"ALL server {cpu['ALL']['server']:.2f} broker {cpu['ALL']['broker']:.2f}"
    )
    print(
        f"logging ALL keeps {results['ratio']:.2f}x of NONE's throughput "
        f"({', '.join(f'{r:.2f}' for r in ratios)}); "
        f"NONE {results['NONE']['rps']:.0f} req/s p99 {results['NONE']['p99_ms']:.1f} ms, "
        f"ALL {results['ALL']['rps']:.0f} req/s p99 {results['ALL']['p99_ms']:.1f} ms; "
        f"{results['delivered']['records_on_topic']} of {results['delivered']['records_expected']} records; "
        f"broker restart: {restart['wrk']['failed']} failed, {restart['records_on_topic']} of "
        f"{restart['records_expected']} records; {RESULTS}"
    )


if __name__ == "__main__":
    main()
