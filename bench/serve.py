"""The model server against ``mlflow models serve`` of the same registered model, on loopback.

    python -m bench.serve --home ~/.fjord [--runs 3] [--seconds 10]

Needs a home where ``fjord run`` registered and deployed the fraud model (``make run``). Measures, in
one run, on the same model and the same request (one transaction's 13 features):

- closed loop (wrk, keep-alive, fixed concurrency 1/16/64): req/s, p50, p99, for our server
  (TFLite backend; SavedModel backend; dynamic batching) and for MLflow's server (2 workers);
- open loop (vegeta, fixed rates): p50 and p99 at 500 and 1,500 req/s, and whether the rate held;
- the limit: the same model called in-process, one row per call, with no HTTP in between;
- Kafka inference logging ALL against NONE (the embedded broker);
- a version switch under load, and a broker stop and restart under load: failed requests;
- the online feature lookup: a transaction (card, amount, time, place) against the ready features.

Load generators: Debian's ``wrk`` (closed loop) and ``vegeta`` (open loop, ``go install``-ed into
``bench/.bin``), both C/Go, so the client costs little of the 2 cores. Raw results go to
``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "serve.json"
VEGETA = "github.com/tsenart/vegeta/v12@v12.12.0"
BIN = REPO / "bench" / ".bin"


def _free_port() -> int:
    from fjord.services.process import free_port

    return free_port()


def vegeta() -> str:
    path = BIN / "vegeta"
    if not path.exists():
        subprocess.run(["go", "install", VEGETA], check=True, env={**os.environ, "GOBIN": str(BIN)})
    return str(path)


def wrk(url: str, body: dict[str, Any], connections: int, seconds: int) -> dict[str, float]:
    """Closed loop: ``connections`` keep-alive clients, each sending its next request on an answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "failed": int(failed.group(1)) if failed else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def open_loop(url: str, body: dict[str, Any], rate: int, seconds: int) -> dict[str, float]:
    """Open loop: requests at ``rate`` per second whatever the answers (vegeta)."""
    target = json.dumps(
        {
            "method": "POST",
            "url": url,
            "body": _b64(json.dumps(body)),
            "header": {"Content-Type": ["application/json"]},
        }
    )
    attack = subprocess.run(
        [vegeta(), "attack", "-format=json", f"-rate={rate}", f"-duration={seconds}s", "-max-workers=256"],
        input=(target + "\n").encode(),
        capture_output=True,
        check=True,
    ).stdout
    report = json.loads(
        subprocess.run(
            [vegeta(), "report", "-type=json"], input=attack, capture_output=True, check=True
        ).stdout
    )
    return {
        "rate": rate,
        "achieved_rps": report["throughput"],
        "p50_ms": report["latencies"]["50th"] / 1e6,
        "p99_ms": report["latencies"]["99th"] / 1e6,
        "success": report["success"],
    }


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = runs[0].keys()
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["spread"] = {
        k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in ("rps", "p99_ms") if k in keys
    }
    out["runs"] = runs
    return out


class Server:
    """A server process on a free port, stopped with SIGTERM."""

    def __init__(self, argv: list[str], ready: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.process = subprocess.Popen(
            argv,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{argv[:4]} exited: {log.read_text()[-1500:]}")
            try:
                if httpx.get(ready, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{argv[:4]} not ready: {log.read_text()[-1500:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def ours(model_dir: Path, log: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[Server, str]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "jobs.serve.server",
        "--port=0",
        f"--rest_api_port={port}",
        "--model_name=fraud",
        f"--model_base_path={model_dir}",
        *flags,
    ]
    base = f"http://127.0.0.1:{port}"
    return Server(argv, f"{base}/v1/models/fraud", log, env), f"{base}/v1/models/fraud:predict"


def mlflow_peer(model_uri: str, tracking: str, log: Path) -> tuple[Server, str]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--workers",
        "2",
    ]
    base = f"http://127.0.0.1:{port}"
    # MLflow runs `uvicorn` from PATH: the venv's.
    env = {"MLFLOW_TRACKING_URI": tracking, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return Server(argv, f"{base}/ping", log, env), f"{base}/invocations"


def in_process(model_dir: Path, row: dict[str, float], seconds: float) -> dict[str, float]:
    """The limit: the model's backends called in this process, one row per call, nothing in between."""
    import numpy as np

    from jobs.serve.backends import open_backend, read_signature_defs, signatures_of

    signatures = signatures_of(read_signature_defs(model_dir))
    inputs = {k: np.array([v], dtype=np.float32) for k, v in row.items()}
    out = {}
    for choice in ("tflite", "savedmodel"):
        backend = open_backend(choice, model_dir, signatures)
        backend.run("serving_default", inputs)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            backend.run("serving_default", inputs)
            calls += 1
        out[f"{choice}_calls_per_s"] = calls / (time.perf_counter() - started)
    return out


def under_load(url: str, body: dict[str, Any], seconds: int, during: Any) -> dict[str, Any]:
    """wrk at 16 connections for ``seconds`` while ``during()`` runs in this thread; wrk's figures."""
    import threading

    outcome: dict[str, Any] = {}
    load = threading.Thread(target=lambda: outcome.update(wrk(url, body, 16, seconds)))
    load.start()
    extra = during()
    load.join()
    return {**outcome, **(extra or {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("FJORD_HOME", "~/.fjord")).expanduser()
    )
    parser.add_argument("--project", default="fraud")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (the closed-loop load generator)")
    os.environ["FJORD_HOME"] = str(args.home)
    from fjord.experiment.tracking import client, tracking_uri
    from jobs.serve import serving

    tracking = tracking_uri()
    champion = client(tracking).get_model_version_by_alias("fraud", "champion")
    version = int(champion.version)
    served = Path(serving._base_path(serving._project(args.project), "fraud")) / str(version)
    # The champion alone in a base path of its own: the servers load exactly the model MLflow serves.
    model_base = Path(tempfile.mkdtemp(prefix="bench-model-")) / "fraud"
    shutil.copytree(served, model_base / str(version))
    model_dir = model_base / str(version)
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    import pyarrow.parquet as pq

    features = json.loads((model_dir / "fjord-model.json").read_text())
    from jobs.serve.backends import read_signature_defs, signatures_of

    inputs = sorted(signatures_of(read_signature_defs(model_dir))["serving_default"].inputs)
    dataset = args.home / "fs" / "Projects" / args.project / "TrainingDatasets" / "fraud_demo_1" / "1"
    frame = pq.read_table(sorted(dataset.rglob("*.parquet"))[0]).to_pandas().tail(1)
    row = {n: float(frame[n].iloc[0]) if frame[n].iloc[0] == frame[n].iloc[0] else 0.0 for n in inputs}
    ours_body = {"instances": [row]}
    peer_body = {"dataframe_records": [row]}
    results: dict[str, Any] = {
        "machine": os.uname().nodename,
        "cores": os.cpu_count(),
        "model_version": version,
        "seconds_per_run": args.seconds,
        "runs": args.runs,
        "card": features.get("metrics"),
    }

    def closed(url: str, body: dict[str, Any], label: str) -> None:
        for connections in (1, 16, 64):
            runs = [wrk(url, body, connections, args.seconds) for _ in range(args.runs)]
            results.setdefault(label, {})[f"c{connections}"] = _median(runs)
            print(label, connections, results[label][f"c{connections}"]["rps"], flush=True)

    peer, peer_url = mlflow_peer(f"models:/fraud/{version}", tracking, logs / "mlflow.log")
    try:
        closed(peer_url, peer_body, "mlflow_serve")
        results["mlflow_serve"]["open_loop"] = [
            open_loop(peer_url, peer_body, r, args.seconds) for r in (300, 500)
        ]
    finally:
        peer.stop()
    for label, flags in (
        ("fjord_tflite", ["--model_backend=tflite"]),
        ("fjord_savedmodel", ["--model_backend=savedmodel"]),
    ):
        server, url = ours(model_base, logs / f"{label}.log", *flags)
        try:
            closed(url, ours_body, label)
            results[label]["open_loop"] = [open_loop(url, ours_body, r, args.seconds) for r in (500, 1500)]
        finally:
            server.stop()
    batching = logs / "batching.config"
    batching.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 500 }\nnum_batch_threads { value: 2 }\n"
    )
    server, url = ours(
        model_base,
        logs / "batching.log",
        "--model_backend=savedmodel",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
    )
    try:
        closed(url, ours_body, "fjord_savedmodel_batching")
    finally:
        server.stop()
    results["in_process"] = in_process(model_dir, row, args.seconds)

    from fjord.services import service

    broker = service("kafka")
    bootstrap = broker.start()
    for mode in ("NONE", "ALL"):
        server, url = ours(
            model_base,
            logs / f"log-{mode}.log",
            f"--inference_logging={mode}",
            f"--kafka_bootstrap_servers={bootstrap}",
            "--kafka_topic=bench_inference_log",
        )
        try:
            runs = [wrk(url, ours_body, 16, args.seconds) for _ in range(args.runs)]
            results.setdefault("logging", {})[mode] = _median(runs)
            if mode == "ALL":
                dropped = httpx.get(url.replace("/v1/models/fraud:predict", "/monitoring/prometheus/metrics"))
                results["logging"]["metrics_status"] = dropped.status_code

                # A broker stop and restart under load: the requests answered meanwhile.
                def restart() -> None:
                    time.sleep(4)
                    broker.stop()
                    time.sleep(5)
                    broker.start()

                results["broker_restart_under_load"] = under_load(url, ours_body, 20, restart)
        finally:
            server.stop()

    # A version switch under load: a new version appears and becomes the latest while wrk runs.
    switch_base = Path(tempfile.mkdtemp(prefix="bench-switch-"))
    shutil.copytree(model_dir, switch_base / "1")
    server, url = ours(switch_base, logs / "switch.log", "--file_system_poll_wait_seconds=0.5")
    try:

        def switch() -> dict[str, Any]:
            time.sleep(3)
            shutil.copytree(model_dir, switch_base / "2")
            deadline, status = time.monotonic() + 60, []
            while time.monotonic() < deadline:
                status = httpx.get(url.replace(":predict", "")).json()["model_version_status"]
                if ("2", "AVAILABLE") in {(s["version"], s["state"]) for s in status}:
                    break
                time.sleep(0.5)
            return {"switched": status}

        outcome = under_load(url, ours_body, 30, switch)
        results["version_switch_under_load"] = outcome
    finally:
        server.stop()

    # The online feature lookup: the same model called with a transaction (cc_num, amount, ts, place)
    # against the project's running serving, which fills the rest from the online store.
    url = serving.url(project=args.project)
    landing = sorted(
        (args.home / "fs" / "Projects" / args.project / "Resources" / "landing").glob(
            "*/transactions.parquet"
        )
    )
    tx = pq.read_table(landing[-1]).to_pandas().tail(1).iloc[0]
    transaction = {
        "instances": [
            {
                "cc_num": int(tx.cc_num),
                "amount": float(tx.amount),
                "ts": tx.ts.isoformat(),
                "lat": float(tx.lat),
                "lon": float(tx.lon),
                "category": str(tx.category),
            }
        ]
    }
    predict = f"{url}/v1/models/fraud:predict"
    results["feature_lookup"] = {
        "features": _median([wrk(predict, ours_body, 16, args.seconds) for _ in range(args.runs)]),
        "transaction": _median([wrk(predict, transaction, 16, args.seconds) for _ in range(args.runs)]),
        "features_c1": _median([wrk(predict, ours_body, 1, args.seconds) for _ in range(args.runs)]),
        "transaction_c1": _median([wrk(predict, transaction, 1, args.seconds) for _ in range(args.runs)]),
    }
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v for k, v in results.items() if k != "card"}, indent=1, default=str)[:4000])


if __name__ == "__main__":
    main()
