"""ETL benchmarks: the Spark ETL + validation job against the pandas job a user would write instead.

For each size (one daily batch of N transactions), in one run:

- Fjord: ``python -m jobs.etl.main`` with Great Expectations validation, and without it (the cost of
  validating every record); rows/s of the whole job and peak memory of the process tree (Python and
  Spark's JVM, sampled every 0.2 s).
- plain Spark (the peer of issue 11's goal): the same transforms as one plain Spark job: read the
  landed Parquet, compute the windows (``transaction_features``) and each card's state from them
  (``card_features``), write Parquet. No quarantine, no validation, no feature store. Fjord's job is
  profiled per step beside it (``EtlResult.seconds``).
- pandas: the same cleaning, the same window features (groupby-rolling over 1h/4h/24h/7d, previous
  transaction, distance and speed, category frequency) and the same GX suites on a pandas DataFrame,
  reading the whole batch into memory, and writing the features and labels as Parquet.

Each job starts from its own copy of the landing data (hard links) with an empty feature store, so no
run finds the commits or online rows of an earlier one.

    python -m bench.etl --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = "2026-11-01"


def _measure(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall time and peak RSS of the whole process tree of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak / 2**20, "stdout": json.loads(last)}


def _pandas_quarantine(frame: Any, name: str, suite: list[dict[str, Any]]) -> tuple[Any, int]:
    """The suite's ``quarantine`` rules on a pandas frame: (kept rows, quarantined count)."""
    broken = None
    for item in suite:
        if item["on_failure"] != "quarantine":
            continue
        column, kwargs = frame[item["kwargs"]["column"]], item["kwargs"]
        if item["type"] == "expect_column_values_to_not_be_null":
            rule = column.isna()
        elif item["type"] == "expect_column_values_to_be_between":
            rule = column.notna() & ((column < kwargs["min_value"]) | (column > kwargs["max_value"]))
        else:
            rule = column.notna() & ~column.isin(kwargs["value_set"])
        broken = rule if broken is None else broken | rule
    if broken is None:
        return frame, 0
    return frame[~broken], int(broken.sum())


def pandas_job(project_dir: Path) -> dict[str, Any]:
    """The single-machine baseline doing the job's work with pandas, all in memory: the same
    cleaning, quarantine rules, label join, window and profile features and GX suites (on the
    cleaned batch, before the features, as the job validates), written as Parquet. Not done: the
    feature store's commit, statistics and online rows, and history from earlier batches."""
    from datetime import datetime

    import great_expectations as gx
    import numpy as np
    import pandas as pd
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from jobs.etl.validation import load_suite

    batch = project_dir / "Resources" / "landing" / BATCH
    frames = {n: pd.read_parquet(batch / f"{n}.parquet") for n in ("transactions", "labels", "profiles")}
    day = datetime(2026, 11, 1)
    subs = {"batch_start": pd.Timestamp(day, tz="UTC"), "batch_end": pd.Timestamp(2026, 11, 2, tz="UTC")}
    suites = {name: load_suite(name, subs) for name in frames}
    tx = frames["transactions"]
    for column in ("category", "channel"):
        tx[column] = tx[column].str.strip().str.lower()
    tx["city"] = tx.city.str.strip()
    quarantined = 0
    for name in frames:
        frames[name], count = _pandas_quarantine(
            frames[name] if name != "transactions" else tx, name, suites[name]
        )
        quarantined += count
    tx = frames["transactions"].sort_values(["ts", "tid"]).drop_duplicates("tid")
    labels = frames["labels"].merge(tx[["tid", "cc_num", "ts"]], on="tid", how="inner")
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas(name="p")
    success = True
    for name, frame in {
        "transactions": tx,
        "labels": labels[frames["labels"].columns],
        "profiles": frames["profiles"],
    }.items():
        suite = gx.ExpectationSuite(name=name)
        for item in suites[name]:
            suite.add_expectation_configuration(
                ExpectationConfiguration(type=item["type"], kwargs=item["kwargs"])
            )
        batch_definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("w")
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
        success = success and result.success
    tx = tx.sort_values(["cc_num", "ts"])
    grouped = tx.set_index("ts").groupby("cc_num").amount
    for name, span in {"1h": "1h", "4h": "4h", "24h": "24h", "7d": "7D"}.items():
        rolling = grouped.rolling(span)
        tx[f"tx_count_{name}"] = rolling.count().to_numpy()
        tx[f"amount_sum_{name}"] = rolling.sum().to_numpy()
        tx[f"amount_mean_{name}"] = rolling.mean().to_numpy()
        tx[f"amount_std_{name}"] = rolling.std().fillna(0).to_numpy()
    # Rolling results come out in group-key order: sort the frame the same way before assigning.
    tx = tx.sort_values(["cc_num", "category", "ts"])
    per_category = tx.set_index("ts").groupby(["cc_num", "category"]).amount.rolling("7D").count()
    tx["category_freq_7d"] = per_category.to_numpy() / tx.tx_count_7d
    tx = tx.sort_values(["cc_num", "ts", "tid"])
    by_card = tx.groupby("cc_num")
    tx["secs_since_prev"] = by_card.ts.diff().dt.total_seconds()
    lat1, lon1 = np.radians(by_card.lat.shift()), np.radians(by_card.lon.shift())
    lat2, lon2 = np.radians(tx.lat), np.radians(tx.lon)
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    tx["dist_prev_km"] = 2 * 6371 * np.arcsin(np.sqrt(a))
    tx["speed_prev_kmh"] = tx.dist_prev_km / (tx.secs_since_prev.clip(lower=60) / 3600)
    tx["hour"] = tx.ts.dt.hour
    tx["is_night"] = (tx.hour < 5).astype("int32")
    profiles = frames["profiles"].copy()
    start = pd.Timestamp(day)
    profiles["as_of"] = pd.Timestamp(day, tz="UTC")
    profiles["age_years"] = (start - pd.to_datetime(profiles.birthdate)).dt.days / 365.25
    profiles["days_to_expiry"] = (pd.to_datetime(profiles.cc_expiry) - start).dt.days
    out = project_dir / "Resources" / "pandas-baseline"
    out.mkdir(exist_ok=True)
    tx.to_parquet(out / "transactions_features.parquet")
    labels.to_parquet(out / "fraud_labels.parquet")
    profiles.drop(columns=["birthdate", "cc_expiry"]).to_parquet(out / "profile_features.parquet")
    return {"rows": len(tx), "quarantined": quarantined, "success": success}


def fjord_job(validate: bool) -> dict[str, object]:
    """Fjord's ETL job, as ``python -m jobs.etl.main`` runs it; its summary and per-step seconds."""
    from jobs.etl.job import EtlSpec, run

    result = run(EtlSpec(project="fraud", batch=BATCH, validate_data=validate))
    return {"summary": result.summary()[:200], "steps": result.seconds}


def plain_spark_job(project_dir: Path) -> dict[str, object]:
    """The peer: the job's two transforms as one plain Spark job, Parquet in, Parquet out: the
    per-transaction windows, then each card's state (``card_features``) from them, as the job does."""
    from fjord.spark import get_spark
    from jobs.etl.fraud import card_features, transaction_features

    spark = get_spark(app_name="plain-etl")
    started = time.perf_counter()
    batch = spark.read.parquet(str(project_dir / "Resources" / "landing" / BATCH / "transactions.parquet"))
    out = project_dir / "Resources" / "plain-spark"
    transaction_features(batch.dropDuplicates(["tid"]), None).write.mode("overwrite").parquet(str(out / "tx"))
    windows = time.perf_counter()
    cards = card_features(spark.read.parquet(str(out / "tx")), None)
    cards.write.mode("overwrite").parquet(str(out / "cards"))
    return {
        "steps": {
            "read, windows, write": round(windows - started, 3),
            "card state, write": round(time.perf_counter() - windows, 3),
        }
    }


VARIANTS = ("validated", "unvalidated", "plain-spark", "pandas")


def _command(variant: str, home: Path) -> list[str]:
    project = str(home / "fs" / "Projects" / "fraud")
    return [sys.executable, "-m", "bench.etl", variant, project]


def _fresh_home(source: Path, name: str) -> Path:
    """A new FJORD_HOME like ``source``: the landing data hard-linked (read only), the rest copied."""
    home = source.parent / name
    shutil.rmtree(home, ignore_errors=True)

    def copy(src: str, dst: str) -> None:
        if "/Resources/landing/" in src:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, home, copy_function=copy)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant (medians are reported)")
    args = parser.parse_args()
    results = {}
    for rows in args.sizes:
        source = ROOT / "bench" / ".data" / f"etl-{rows}" / "landed"
        if not (source / "fs" / "Projects" / "fraud" / "Resources" / "landing" / BATCH / "_SUCCESS").exists():
            shutil.rmtree(source, ignore_errors=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fjord.cli.main",
                    "demo",
                    "data",
                    "--rows",
                    str(rows),
                    "--days",
                    "1",
                    "--start",  # fixed: the default follows today's date
                    BATCH,
                    "--create",
                ],
                env={**os.environ, "FJORD_HOME": str(source)},
                check=True,
                capture_output=True,
            )
        entry = {}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
        for _ in range(args.runs):  # interleaved, so drift on the machine falls on every variant
            for name in args.variants:
                home = _fresh_home(source, name)
                runs[name].append(_measure(_command(name, home), {**os.environ, "FJORD_HOME": str(home)}))
                shutil.rmtree(home)
        for name, measured in runs.items():
            seconds = sorted(m["seconds"] for m in measured)
            entry[name] = {
                **min(measured, key=lambda m: abs(m["seconds"] - statistics.median(seconds))),
                "seconds": statistics.median(seconds),
                "runs_seconds": seconds,
            }
        results[rows] = entry
        line = " | ".join(
            f"{name} {rows / m['seconds']:,.0f} rows/s, {m['peak_rss_mb']:,.0f} MB"
            for name, m in entry.items()
        )
        if {"validated", "plain-spark"} <= set(entry):
            line += (
                f" | job / plain Spark {entry['validated']['seconds'] / entry['plain-spark']['seconds']:.2f}x"
            )
        if {"validated", "unvalidated"} <= set(entry):
            line += (
                f" | validation cost {entry['validated']['seconds'] / entry['unvalidated']['seconds']:.2f}x"
            )
        print(f"{rows:>11,} rows | {line}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "etl.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    for rows, entry in results.items():  # keep the other sizes' and variants' last figures
        previous.setdefault(str(rows), {}).update(entry)
    out.write_text(json.dumps(previous, indent=2))


if __name__ == "__main__":
    jobs = {
        "validated": lambda project: fjord_job(validate=True),
        "unvalidated": lambda project: fjord_job(validate=False),
        "plain-spark": lambda project: plain_spark_job(Path(project)),
        "pandas": lambda project: pandas_job(Path(project)),
    }
    if len(sys.argv) > 1 and sys.argv[1] in jobs:
        print(json.dumps(jobs[sys.argv[1]](sys.argv[2])))
    else:
        main()
