"""Training/serving skew of the fraud transformer, measured row by row, and what exactness costs.

    python -m bench.skew [--rows 30000] [--seeds 5 6 7]

Per seed: demo data of three days; the ETL publishes the first two; the third day's transactions are
served in time order, in requests of 100, through the model server's own enrichment (online lookup
of the ``fraud_serving`` view, then the transformer) and archived; the ETL then publishes the third
day and the skew job compares each served row with the ETL's. Two transformers, on the same rows:

- ``approximate``: the transformer as it shipped before the skew was measured (windows as of the
  card's last published transaction, the profile as published): the shipped code's fallback for a
  state without ``recent_7d``, reached by hiding that column and the profile's ``as_of``;
- ``exact``: the shipped transformer (the card's last 7 days and the transactions served since).

Reported per transformer: the share of rows beyond tolerance per feature, and the enrichment's cost
per 100-row request (lookup + transformer, median of the requests). Results: bench/results/skew.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "skew.json"


class Timed:
    """A transformer wrapper that times each call (the enrichment around it is timed by the caller)."""

    def __init__(self, transformer: Any, hide: tuple[str, ...] = ()) -> None:
        self.transformer, self.hide, self.seconds = transformer, hide, []

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [{k: v for k, v in row.items() if k not in self.hide} for row in rows]
        began = time.perf_counter()
        out = self.transformer(rows)
        self.seconds.append(time.perf_counter() - began)
        return out


def measure(rows: int, seed: int) -> dict[str, Any]:
    from fjord.config import reset_settings

    home = tempfile.mkdtemp(prefix="fjord-bench-skew-")
    os.environ["FJORD_HOME"] = home
    reset_settings()
    from fjord.projects import create_project
    from jobs.etl.demo_data import DemoSpec, generate
    from jobs.monitor.archive import InferenceArchive
    from jobs.serve.transformers import FraudTransformer
    from jobs.skew.job import SkewSpec, run
    from tests.integration.skew_setup import publish, serve_day

    project = create_project("fraud")
    batches = generate(project.fs, DemoSpec(rows=rows, days=3, seed=seed))
    publish(project, batches[:2])
    timed = {
        "approximate": Timed(FraudTransformer(), hide=("recent_7d", "as_of")),
        "exact": Timed(FraudTransformer()),
    }
    served = 0
    for version, (name, transformer) in enumerate(timed.items(), start=1):
        began = time.perf_counter()
        served = serve_day(project, batches[2], transformer=transformer, per_request=100, version=version,
                           archive_batch=version)  # fmt: skip
        timed[name].wall = time.perf_counter() - began  # type: ignore[attr-defined]
    publish(project, batches[2:])
    began = time.perf_counter()
    result = run(SkewSpec(project="fraud", notify_airflow=False))
    job_s = time.perf_counter() - began
    records = InferenceArchive(project.fs, "fraud").stats()["records"]
    out: dict[str, Any] = {"seed": seed, "served_rows": served, "skew_job_s": round(job_s, 3),
                           "archive_records": records}  # fmt: skip
    for version, (name, transformer) in enumerate(timed.items(), start=1):
        shares = {r["feature"]: r["share"] for r in result.rows if r["version"] == version}
        out[name] = {
            "share_beyond_tolerance": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "features_over_1pct": sum(1 for s in shares.values() if s > 0.01),
            "max_share": max(shares.values()),
            "transformer_ms_per_request_median": round(statistics.median(transformer.seconds) * 1000, 3),
            "serve_wall_s": round(transformer.wall, 2),  # type: ignore[attr-defined]
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6, 7])
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        runs.append(measure(args.rows, seed))
        print(json.dumps(runs[-1]), flush=True)
    summary = {
        name: {
            "max_share_per_run": [r[name]["max_share"] for r in runs],
            "features_over_1pct_per_run": [r[name]["features_over_1pct"] for r in runs],
            "transformer_ms_per_request": [r[name]["transformer_ms_per_request_median"] for r in runs],
        }
        for name in ("approximate", "exact")
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": args.rows, "runs": runs, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
