"""What a live shadow costs the served calls: the model server at 16 clients with a shadow version
scoring every call, against the same server without one, in the same run.

    python -m bench.shadow [--runs 3] [--seconds 10]

The model is the fraud model's shape (its 13 named inputs, the training job's network, exported and
converted to TFLite as the training job does; random weights: the cost does not depend on them),
served as versions 1 (stable) and 2 (shadow) from one models.config. The request carries the model
inputs (no online lookup): the lightest call, so the shadow's share of the work is the largest it
gets; with the lookup (the demo's path) each call costs more and the shadow the same. Inference
logging is on (ALL, the embedded Kafka) in both, as the shadow's records go there. Load: Debian's
``wrk``, 16 keep-alive connections (bench/serve.py). Goal: shadow on keeps at least 0.85x of shadow
off's throughput. Raw results: ``bench/results/shadow.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.serve import REPO, Server, _free_port, wrk

RESULTS = REPO / "bench" / "results" / "shadow.json"
FEATURES = [
    "amount", "tx_count_1h", "tx_count_24h", "amount_sum_24h", "amount_mean_7d", "secs_since_prev",
    "dist_prev_km", "speed_prev_kmh", "category_freq_7d", "hour", "is_night", "age_years", "days_to_expiry",
]  # fmt: skip


def fraud_shaped_version(base: Path, version: int, seed: int) -> Path:
    """``base/<version>``: the training job's network over the fraud features, as it exports it."""
    import numpy as np
    import pandas as pd

    from jobs.serve.backends import TFLITE_FILE
    from jobs.train.model import build_model, export_saved_model
    from jobs.train.optimize import convert

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(256, len(FEATURES))), columns=FEATURES)
    model = build_model(FEATURES, frame, units=32, dropout=0.1, lr=1e-3)
    path = base / str(version)
    export_saved_model(model, FEATURES, path)
    (path / TFLITE_FILE).write_bytes(convert(path, quantize=True))
    (path / "_SUCCESS").write_text("{}")
    return path


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """wrk runs' median req/s, p50 and p99, their spread, and the runs themselves."""
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "spread": {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in ("rps", "p99_ms")},
        "runs": runs,
    }


@dataclass
class ServingBench:
    """What a serving benchmark starts from (:func:`serving_bench`)."""

    args: Any  # --runs, --seconds
    home: Path
    base: Path  # models/fraud, its versions
    broker: Any
    bootstrap: str
    body: dict[str, Any]  # a request: the 13 inputs, no online lookup
    results: dict[str, Any]  # the machine and the load, to add the figures to


def serving_bench(doc: str, runs: int, prefix: str, versions: int) -> ServingBench:
    """Its options (``--runs``, ``--seconds``), a new home with ``versions`` fraud-shaped model
    versions under ``models/fraud``, and the embedded Kafka started in it (the server finds its
    login as any Fjord process does)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (the closed-loop load generator)")
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["FJORD_HOME"] = str(home)
    from fjord.services import service

    base = home / "models" / "fraud"
    for version in range(1, versions + 1):
        fraud_shaped_version(base, version, seed=version)
    broker = service("kafka")
    results = {"machine": os.uname().nodename, "cores": os.cpu_count(), "connections": 16,
               "seconds_per_run": args.seconds, "runs": args.runs}  # fmt: skip
    body = {"instances": [dict.fromkeys(FEATURES, 0.5)]}
    return ServingBench(args, home, base, broker, broker.start(), body, results)


def main() -> None:
    bench = serving_bench(__doc__, 3, "bench-shadow-", versions=2)
    args, home, base, broker, bootstrap = bench.args, bench.home, bench.base, bench.broker, bench.bootstrap
    body, results = bench.body, bench.results
    try:
        for logging in ("ALL", "NONE"):
            servers = {}
            try:
                for mode, labels in (
                    ("shadow_off", {"stable": 1}),
                    ("shadow_on", {"stable": 1, "shadow": 2}),
                ):
                    servers[mode] = _server(home, base, bootstrap, logging, mode, labels)
                for url in servers.values():
                    wrk(f"{url[1]}:predict", body, 16, 2)  # warm: both versions, the producer, the topic
                runs: dict[str, list[dict[str, Any]]] = {"shadow_off": [], "shadow_on": []}
                for _ in range(args.runs):  # interleaved: a slow minute of the machine hits both
                    for mode, (_, url) in servers.items():
                        runs[mode].append(wrk(f"{url}:predict", body, 16, args.seconds))
                metrics = {
                    mode: httpx.get(url.replace("/v1/models/fraud", "/monitoring/prometheus/metrics")).text
                    for mode, (_, url) in servers.items()
                }
            finally:
                for server, _ in servers.values():
                    server.stop()
            out = results[f"logging_{logging}"] = {}
            for mode, mode_runs in runs.items():
                out[mode] = {
                    **medians(mode_runs),
                    "failed": sum(r["failed"] + r["socket_errors"] for r in mode_runs),
                    "metrics": [m for m in metrics[mode].splitlines()
                                if ("shadow" in m or "inference_log" in m) and m[0] != "#"],
                }  # fmt: skip
            ratios = [
                on["rps"] / off["rps"] for off, on in zip(runs["shadow_off"], runs["shadow_on"], strict=True)
            ]
            out["ratio"] = statistics.median(ratios)
            out["ratios"] = ratios
            print(
                f"logging {logging}: shadow on {out['ratio']:.2f}x of off "
                f"({', '.join(f'{r:.2f}' for r in ratios)}); "
                f"off {out['shadow_off']['rps']:.0f} req/s p99 {out['shadow_off']['p99_ms']:.1f} ms, "
                f"on {out['shadow_on']['rps']:.0f} req/s p99 {out['shadow_on']['p99_ms']:.1f} ms",
                flush=True,
            )
    finally:
        broker.stop()
    ratio = results["logging_ALL"]["ratio"]
    results["goal"] = {"min_ratio": 0.85, "met": ratio >= 0.85, "measured_with": "logging ALL"}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"shadow on: {ratio:.2f}x of shadow off's throughput at 16 clients (logging ALL); {RESULTS}")


def _server(
    home: Path, base: Path, bootstrap: str, logging: str, mode: str, labels: dict[str, int]
) -> tuple[Server, str]:
    from jobs.serve.config import ModelConfig, VersionPolicy, write_model_config

    config = home / f"{logging}-{mode}.config"
    write_model_config(
        config, [ModelConfig("fraud", str(base), VersionPolicy("specific", specific=(1, 2)), labels)]
    )
    port = _free_port()
    argv = [
        sys.executable, "-m", "jobs.serve.server", "--port=0", f"--rest_api_port={port}",
        f"--model_config_file={config}", "--completion_marker=_SUCCESS", f"--inference_logging={logging}",
        f"--kafka_bootstrap_servers={bootstrap}", f"--kafka_topic=bench_shadow_{mode}",
        f"--monitoring_config_file={_monitoring(home)}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models/fraud"
    return Server(argv, f"{url}/versions/2", home / f"{logging}-{mode}.log"), url


def _monitoring(home: Path) -> Path:
    path = home / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    return path


if __name__ == "__main__":
    main()
