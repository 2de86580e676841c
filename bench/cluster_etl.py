"""The ETL on the cluster profile: 1 Spark worker against 2, on this 2-core machine (issue 28).

For each size and worker count, in one run: a fresh home on the cluster profile (`services.cluster.
spark_workers` workers of 1 core and 2g each, HDFS with 2 DataNodes as the storage root), the demo's
landed batch of N transactions uploaded to it (the same files as ``bench/etl.py``'s), then Fjord's ETL
job (``python -m bench.etl validated``: GX, the four-group publish) timed whole and per step. From the
Spark event log of the job: when each executor registered, counted from the application's start,
and its tasks' run time, which together give the per-executor overhead.

On this 2-core machine the second worker brings a second executor, not a second machine: it shares
the cores with the driver, the first executor and the services, so little speed-up is expected. The
figures say what the extra executor costs and what a second host would bring (docs/scaling.md).

    python -m bench.cluster_etl --sizes 1000000 10000000 --workers 1 2 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.etl import BATCH, RESULTS, ROOT, _measure

DATA = ROOT / "bench" / ".data"


def _env(home: Path, workers: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FJORD_")},
        "FJORD_HOME": str(home),
        "FJORD_SERVICES__PROFILE": "cluster",
        "FJORD_SERVICES__CLUSTER__SPARK_WORKERS": str(workers),
        "FJORD_SERVICES__PREFERRED_PORTS": "false",
        # each worker offers 2g: one executor of 2g per worker (the embedded driver has 2g for all)
        "FJORD_SPARK__EXECUTOR_MEMORY": "2g",
    }


def _landed(rows: int) -> Path:
    """The local landed batch of ``rows`` transactions (made once, shared with bench/etl.py)."""
    source = DATA / f"etl-{rows}" / "landed"
    batch = source / "fs" / "Projects" / "fraud" / "Resources" / "landing" / BATCH
    if not (batch / "_SUCCESS").exists():
        shutil.rmtree(source, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "fjord.cli.main", "demo", "data", "--rows", str(rows), "--days", "1",
             "--start", BATCH, "--create"],
            env={**os.environ, "FJORD_HOME": str(source)}, check=True, capture_output=True,
        )  # fmt: skip
    return batch


def land(batch: str) -> dict[str, Any]:
    """(In the benchmark's child, on the cluster's settings.) Upload the landed batch to the root."""
    from fjord.projects import create_project

    project = create_project("fraud")
    began = time.perf_counter()
    with project.fs.publish(f"Resources/landing/{BATCH}") as staged:
        for file in sorted(Path(batch).iterdir()):
            if file.is_file() and not file.name.startswith(("_", ".")):
                staged.upload(str(file), file.name)
    return {"upload_s": round(time.perf_counter() - began, 2), "root": project.fs.uri("")}


def _events(read: Any, names: list[str]) -> list[dict[str, Any]]:
    """One application's events from its event log files (Spark 4: rolled ``events_<n>_<app>``
    files, zstd-compressed by default), in order."""
    import io

    import zstandard

    def number(name: str) -> int:
        return int(name.rsplit("/", 1)[-1].split("_")[1])

    events = []
    for name in sorted(names, key=number):
        data = read(name)
        if name.endswith(".zstd"):
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
        events += [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return events


def executors(app_name: str) -> dict[str, Any]:
    """(In the child.) The job's Spark event log: each executor's registration after the
    application started, and its tasks' summed run time."""
    from fjord.projects import get_project

    logs = get_project("fraud").fs.sub("Logs/spark-events")
    by_app: dict[str, list[str]] = {}
    for name in logs.find(""):
        if name.rsplit("/", 1)[-1].startswith("events_"):
            by_app.setdefault(name.rsplit("/", 1)[0], []).append(name)
    found = []
    for names in by_app.values():
        events = _events(logs.read_bytes, names)
        start = next((e for e in events if e["Event"] == "SparkListenerApplicationStart"), None)
        if start and start["App Name"] == app_name:
            found.append((start, events))
    if not found:
        return {"executors_error": f"no event log of {app_name} among {len(by_app)}"}
    start, events = max(found, key=lambda f: f[0]["Timestamp"])
    added = {e["Executor ID"]: e["Timestamp"] - start["Timestamp"] for e in events
             if e["Event"] == "SparkListenerExecutorAdded"}  # fmt: skip
    busy: dict[str, float] = {}
    for e in events:
        if e["Event"] == "SparkListenerTaskEnd":
            info = e["Task Info"]
            ran = info["Finish Time"] - info["Launch Time"]
            busy[info["Executor ID"]] = busy.get(info["Executor ID"], 0) + ran
    return {
        "registered_after_s": {k: round(v / 1000, 2) for k, v in sorted(added.items())},
        "task_seconds": {k: round(v / 1000, 1) for k, v in sorted(busy.items())},
    }


def run_once(rows: int, workers: int) -> dict[str, Any]:
    home = DATA / f"cluster-etl-{workers}"
    shutil.rmtree(home, ignore_errors=True)
    env = _env(home, workers)
    fjord = [sys.executable, "-m", "fjord.cli.main"]
    began = time.perf_counter()
    subprocess.run([*fjord, "services", "start"], env=env, check=True, capture_output=True)
    started_s = time.perf_counter() - began
    try:
        landed = json.loads(
            subprocess.run([sys.executable, "-m", "bench.cluster_etl", "land", str(_landed(rows))], env=env,
                           check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        job = _measure([sys.executable, "-m", "bench.etl", "validated", "-"], env)
        looked = subprocess.run(
            [sys.executable, "-m", "bench.cluster_etl", "executors", f"etl-{BATCH}"], env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        seen = (
            json.loads(looked.stdout.strip().splitlines()[-1]) if looked.returncode == 0
            else {"executors_error": looked.stderr.strip().splitlines()[-1:]}
        )  # fmt: skip
    finally:
        subprocess.run([*fjord, "down"], env=env, check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return {
        "seconds": job["seconds"], "driver_peak_rss_mb": job["peak_rss_mb"], "steps": job["stdout"]["steps"],
        "summary": job["stdout"]["summary"], "services_start_s": round(started_s, 1), **landed, **seen,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    out = RESULTS / "cluster_etl.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for rows in args.sizes:
        runs: dict[int, list[dict[str, Any]]] = {w: [] for w in args.workers}
        for _ in range(args.runs):  # interleaved: drift on the machine falls on both
            for workers in args.workers:
                runs[workers].append(run_once(rows, workers))
                measured = runs[workers][-1]
                print(
                    f"{rows:>11,} rows, {workers} worker(s): {measured['seconds']:.1f} s "
                    f"({rows / measured['seconds']:,.0f} rows/s); executors registered after "
                    f"{measured.get('registered_after_s')} s, busy {measured.get('task_seconds')} s",
                    flush=True,
                )
        entry = {}
        for workers, measured in runs.items():
            seconds = sorted(m["seconds"] for m in measured)
            entry[str(workers)] = {
                "median_s": statistics.median(seconds),
                "runs_s": seconds,
                "runs": measured,
            }
        if {"1", "2"} <= entry.keys():
            speedup = entry["1"]["median_s"] / entry["2"]["median_s"]
            entry["speedup_2_over_1"] = round(speedup, 3)
            print(f"{rows:>11,} rows: 2 workers {speedup:.2f}x the speed of 1", flush=True)
        results[str(rows)] = entry
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "land":
        print(json.dumps(land(sys.argv[2])))
    elif len(sys.argv) > 2 and sys.argv[1] == "executors":
        print(json.dumps(executors(sys.argv[2])))
    else:
        main()
