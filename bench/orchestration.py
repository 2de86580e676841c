"""`make run`'s job through Airflow, timed per task, beside the same stage jobs run in one process.

    python -m bench.orchestration [--runs 1] [--skip-local] [--job-worker on|off|both]

Each run starts in a new, empty ``FJORD_HOME`` (the checkout's ``.venv`` and ``.jvm`` exist, the
stack is stopped), so it measures what a newcomer's first ``make run`` costs once set-up is done:

- ``airflow cold``: ``fjord run``: the stack's start (Kafka, MLflow, Airflow side by side), the
  project, its environment, the demo data, the DAG run task by task, the predictions and lineage;
- ``airflow warm``: ``fjord run`` again in the same home with the stack up, over the same batches:
  step caching (fjord/stepcache.py) reuses what it can; the first day's ETL runs again (its first
  run read no history), and finds nothing new to publish;
- ``airflow warm, again``: a third ``fjord run``: every cached step is reused (the DAG's ``5.`` step
  is the goal's "warm run over unchanged data");
- ``airflow no cache``: a fourth, ``fjord run --no-cache``: every step runs, as before caching;
- each of the four again with ``, no job worker`` (``airflow.job_worker.enabled: false``, in a home
  of its own): every task starts its job as a process of its own (``spark-submit`` or ``python -m``),
  as before the warm job worker (fjord/jobworker.py);
- ``local``: ``fjord run --local`` in its own new home: the same stage jobs in one process (one JVM,
  one TensorFlow import), the peer that shows what running each task as its own process costs.

Wall times come from this process; task durations from Airflow (``run-<time>.tasks.json``). Raw
results go to ``bench/results/orchestration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "orchestration.json"
FJORD = str(Path(sys.executable).with_name("fjord"))


def _fjord(home: Path, *args: str, worker: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FJORD_")}
    env["FJORD_HOME"] = str(home)
    if not worker:
        env["FJORD_AIRFLOW__JOB_WORKER__ENABLED"] = "false"
    began = time.monotonic()
    done = subprocess.run([FJORD, *args], capture_output=True, text=True, env=env, check=False)
    return round(time.monotonic() - began, 1), done


def _steps(stdout: str) -> dict[str, float]:
    """The seconds each numbered step of ``fjord run`` took, as it printed them."""
    steps, current = {}, None
    for line in stdout.splitlines():
        if match := re.match(r"^(\d+)\. (.+)$", line):
            current = f"{match.group(1)}. {match.group(2)[:60]}"
        elif current and (match := re.search(r"^\s+ok .*\((\d+\.\d) s\)$", line)):
            steps[current] = float(match.group(1))
    return steps


def _airflow_run(home: Path, *options: str, worker: bool) -> dict[str, Any]:
    wall, done = _fjord(home, "run", *options, worker=worker)
    if done.returncode != 0:
        raise SystemExit(f"fjord run failed ({done.returncode}): {done.stderr[-2000:]}")
    timings = json.loads(Path(re.search(r"task durations in (\S+)", done.stdout).group(1)).read_text())  # type: ignore[union-attr]
    return {"wall_s": wall, "steps_s": _steps(done.stdout), "tasks_s": timings["tasks"]}


def _airflow_runs(worker: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    suffix = "" if worker else ", no job worker"
    home = Path(tempfile.mkdtemp(prefix="fjord-bench-orch-"))
    try:
        for kind, options in (
            ("airflow cold", ()),
            ("airflow warm", ()),
            ("airflow warm, again", ()),
            ("airflow no cache", ("--no-cache",)),
        ):
            result[kind + suffix] = _airflow_run(home, *options, worker=worker)
            print(f"{kind}{suffix}: {result[kind + suffix]['wall_s']} s", flush=True)
    finally:
        _fjord(home, "down")
        shutil.rmtree(home, ignore_errors=True)
    return result


def run_once(skip_local: bool, job_worker: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for worker in {"on": [True], "off": [False], "both": [True, False]}[job_worker]:
        result.update(_airflow_runs(worker))
    if not skip_local:
        home = Path(tempfile.mkdtemp(prefix="fjord-bench-local-"))
        try:
            wall, done = _fjord(home, "run", "--local")
            if done.returncode != 0:
                raise SystemExit(f"fjord run --local failed: {done.stderr[-2000:]}")
            result["local"] = {"wall_s": wall, "steps_s": _steps(done.stdout)}
            print(f"local: {wall} s", flush=True)
        finally:
            _fjord(home, "down")
            shutil.rmtree(home, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--job-worker", choices=("on", "off", "both"), default="both")
    args = parser.parse_args(argv)
    runs = [run_once(args.skip_local, args.job_worker) for _ in range(args.runs)]
    summary = {
        kind: {
            "wall_s_median": statistics.median(r[kind]["wall_s"] for r in runs),
            "wall_s_range": [min(r[kind]["wall_s"] for r in runs), max(r[kind]["wall_s"] for r in runs)],
        }
        for kind in runs[0]
    }
    RESULTS.write_text(
        json.dumps({"machine": os.uname().nodename, "runs": runs, "summary": summary}, indent=2)
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
