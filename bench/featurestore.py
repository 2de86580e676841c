"""Feature store benchmarks: Fjord's feature store against Feast, same data, same run.

1. Insert throughput: two feature groups of ``--rows`` rows each (10 float features) from pandas, then
   the same rows from a Spark DataFrame (rows/s, statistics and validation included).
2. Training-data retrieval: ``--labels`` label rows joined point-in-time to both groups (20 features):
   Fjord (DuckDB engine) against Feast's DuckDB offline store. Wall time and peak RSS, each in a fresh
   process, each called twice (first call and steady state, the same warm-up for both); both results
   are checked to agree on every feature (rows, and the sum and nulls of each of the 20). Two paths:
   ``query.read`` to Arrow against ``get_historical_features().to_arrow()``, and the path a user trains
   from, a feature view's ``create_training_data`` + ``get_training_data`` (a versioned dataset with
   its reference statistics, read back as pandas) against ``.to_df()``; beside the latter, the join
   alone read into pandas (``query.read``), the floor ``create_training_data`` is measured against.
3. Online lookups on the same Redis: the latest row of ``--online-entities`` keys per group;
   single-entity p50/p99 and batch-of-100 p99, for Fjord's feature view and Feast's
   ``get_online_features`` over the same 20 features.

Feast runs in its own venv (``bench/.venv-feast``, built here with uv on first use).

    python -m bench.featurestore                       # 1M labels x 10M feature rows (about 15 min)
    python -m bench.featurestore --labels 100000 --rows 500000  # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.peer_metrics import disagreements, measure, retrieval_summary, retrieve_twice

ROOT = Path(__file__).resolve().parent.parent
FEAST_VENV = ROOT / "bench" / ".venv-feast"
FEAST_REQUIREMENT = "feast[duckdb,redis]==0.67.*"
RESULTS = ROOT / "bench" / "results"
FEATURES = 10
T0 = pd.Timestamp("2026-01-01", tz="UTC")
DAYS = 30


# -- data -------------------------------------------------------------------------------------------------


def generate(data: Path, labels: int, rows: int, entities: int, online_entities: int, seed: int = 1) -> None:
    """The shared data set, as Parquet with microsecond UTC timestamps (Feast's DuckDB store needs us)."""
    marker = data / f"generated-{labels}-{rows}-{entities}-{online_entities}"
    if marker.exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    span = DAYS * 86_400 * 1_000_000

    def times(n: int) -> pa.Array:
        micros = T0.value // 1000 + rng.integers(0, span, n)
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))

    for group in ("a", "b"):
        keys = rng.integers(0, entities, rows)
        table = pa.table(
            {
                "cc_num": keys,
                "ts": times(rows),
                **{f"{group}{i}": rng.standard_normal(rows) for i in range(FEATURES)},
            }
        )
        frame = table.to_pandas().drop_duplicates(["cc_num", "ts"])  # unique (key, time), as upserts keep
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, data / f"tx_{group}.parquet")
        latest = frame.sort_values("ts").drop_duplicates("cc_num", keep="last")
        latest = latest[latest.cc_num < online_entities]
        pq.write_table(
            pa.Table.from_pandas(latest, preserve_index=False), data / f"tx_{group}_latest.parquet"
        )
    label_table = pa.table(
        {
            "cc_num": rng.integers(0, entities, labels),
            "ts": times(labels),
            "is_fraud": rng.integers(0, 2, labels),
        }
    )
    frame = label_table.to_pandas().drop_duplicates(["cc_num", "ts"])
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data / "labels.parquet")
    marker.touch()


# -- Fjord's side (each in a fresh process: python -m bench.featurestore ours-...) ------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _connect():
    import featurestore
    from fjord.projects import ensure_project

    ensure_project("bench")
    return featurestore.connect("bench")


def ours_insert(data: Path) -> dict[str, float]:
    from fjord.spark import get_spark

    fs = _connect()
    out: dict[str, float] = {}
    rows = 0
    start = time.perf_counter()
    for group in ("a", "b"):
        frame = pd.read_parquet(data / f"tx_{group}.parquet")
        rows += len(frame)
        fg = fs.get_or_create_feature_group(f"tx_{group}", 1, primary_key=["cc_num"], event_time="ts")
        fg.insert(frame)
    out["pandas_rows"] = rows
    out["pandas_seconds"] = time.perf_counter() - start
    labels = fs.get_or_create_feature_group("labels", 1, primary_key=["cc_num"], event_time="ts")
    labels.insert(pd.read_parquet(data / "labels.parquet"))
    spark = get_spark()
    spark.range(1).count()  # the session's start-up is not part of an insert
    rows, start = 0, time.perf_counter()
    for group in ("a", "b"):
        frame = spark.read.parquet((data / f"tx_{group}.parquet").as_uri())
        fg = fs.get_or_create_feature_group(f"tx_{group}_spark", 1, primary_key=["cc_num"], event_time="ts")
        fg.insert(frame)
        rows += fg.statistics["rows"]
    out["spark_rows"] = rows
    out["spark_seconds"] = time.perf_counter() - start
    return out


def _query(fs):  # type: ignore[no-untyped-def]
    """The benchmark's point-in-time join: the labels with both groups' 20 features."""
    labels, a, b = (fs.get_feature_group(n, 1) for n in ("labels", "tx_a", "tx_b"))
    return (
        labels.select_all()
        .join(a.select([f"a{i}" for i in range(FEATURES)]), on=["cc_num"])
        .join(b.select([f"b{i}" for i in range(FEATURES)]), on=["cc_num"])
    )


def ours_historical(data: Path) -> dict[str, float]:
    fs = _connect()
    query = _query(fs)
    table, cold, warm = retrieve_twice(lambda: query.read(dataframe_type="pyarrow"))
    return retrieval_summary(table, cold, warm, _peak_rss_mb())


def ours_training_data(data: Path) -> dict[str, float]:
    """``create_training_data`` + ``get_training_data`` (twice, as the peer's retrieval), then the
    join alone read into pandas, three times: ``create_seconds`` over ``join_seconds`` is the cost of
    versioning the dataset (the write and its reference statistics) over the join itself."""
    fs = _connect()
    query = _query(fs)
    view = fs.get_or_create_feature_view("bench_training", 1, query=query, labels=["is_fraud"])
    creates: list[float] = []

    def training_data() -> tuple[pd.DataFrame, pd.DataFrame]:
        start = time.perf_counter()
        version, _run = view.create_training_data()
        creates.append(time.perf_counter() - start)
        return view.get_training_data(version)

    (x, y), cold, warm = retrieve_twice(training_data)
    table = pa.Table.from_pandas(pd.concat([x, y], axis=1), preserve_index=False)  # not timed
    joins = []
    for _ in range(3):
        start = time.perf_counter()
        query.read(dataframe_type="pandas")
        joins.append(time.perf_counter() - start)
    summary = retrieval_summary(table, cold, warm, _peak_rss_mb())
    return {**summary, "create_seconds": creates[-1], "join_seconds": min(joins), "join_runs": joins}


def ours_online(data: Path, lookups: int) -> dict[str, float]:
    fs = _connect()
    groups = []
    for group in ("a", "b"):
        fg = fs.get_or_create_feature_group(
            f"tx_{group}_online", 1, primary_key=["cc_num"], event_time="ts", online_enabled=True
        )
        fg.insert(pd.read_parquet(data / f"tx_{group}_latest.parquet"))
        groups.append(fg)
    query = groups[0].select_all().join(groups[1].select_all(), on=["cc_num"])
    view = fs.get_or_create_feature_view("online_bench", 1, query=query, labels=[])
    keys = np.random.default_rng(7).choice(
        pd.read_parquet(data / "tx_a_latest.parquet").cc_num.to_numpy(), size=lookups
    )
    result = measure(
        lambda key: view.get_feature_vector({"cc_num": key}),
        lambda chunk: view.get_feature_vectors([{"cc_num": k} for k in chunk]),
        keys,
    )
    check = view.get_feature_vector({"cc_num": int(keys[0])}, return_type="dict")
    for fg in groups:
        fs.online.drop(fg.online_table)
    return {**result, "check_key": int(keys[0]), "check_a0": check["a0"]}


# -- orchestration ----------------------------------------------------------------------------------------


def _json_from(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_feast() -> Path:
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        from uv import find_uv_bin

        uv = str(find_uv_bin())
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(FEAST_VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), FEAST_REQUIREMENT], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=5_000_000, help="feature rows per group (2 groups)")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--online-entities", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    args = parser.parse_args()

    data = ROOT / "bench" / ".data" / "featurestore"
    generate(data, args.labels, args.rows, args.entities, args.online_entities)
    home = ROOT / "bench" / ".data" / "fjord-home"
    shutil.rmtree(home, ignore_errors=True)
    # One Redis-protocol server (the embedded one) serves both stores' online reads.
    from fjord.services.redis import RedisService

    redis = RedisService(home, preferred_ports=False)
    redis_url = redis.start()
    env = {
        **os.environ,
        "FJORD_HOME": str(home),
        "FJORD_FEATURESTORE__ONLINE_STORE": "redis",
        "FJORD_REDIS__URL": redis_url,
        "FEAST_REDIS": _feast_redis(redis_url),
    }
    ours = [sys.executable, "-m", "bench.featurestore"]
    feast = [str(ensure_feast()), str(ROOT / "bench" / "feast_peer.py")]

    results = {"params": vars(args)}
    partial = RESULTS / "featurestore.partial.json"  # each part as it ends: a late failure loses none
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = {
        "insert": [*ours, "ours-insert", str(data)],
        "historical_fjord": [*ours, "ours-historical", str(data)],
        "historical_feast": [*feast, "historical", str(data)],
        "training_fjord": [*ours, "ours-training-data", str(data)],
        "training_feast": [*feast, "historical-df", str(data)],
        "online_fjord": [*ours, "ours-online", str(data), str(args.lookups)],
        "online_feast": [*feast, "online", str(data), str(args.lookups)],
    }
    try:
        for name, command in parts.items():
            results[name] = _json_from(command, env)
            partial.write_text(json.dumps(results, indent=2))
    finally:
        redis.stop()
    (RESULTS / "featurestore.json").write_text(json.dumps(results, indent=2))
    partial.unlink()
    print_table(results)


def _feast_redis(url: str) -> str:
    """Feast's Redis connection string for ``url`` (the embedded server asks for a password):
    ``host:port,username=...,password=...``."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    login = f",username={unquote(parts.username)}" if parts.username else ""
    login += f",password={unquote(parts.password)}" if parts.password else ""
    return f"{parts.hostname}:{parts.port}{login}"


def print_table(r: dict) -> None:
    ins, hf, hp, of, op = (
        r[k] for k in ("insert", "historical_fjord", "historical_feast", "online_fjord", "online_feast")
    )
    wrong = disagreements(hf, hp)
    tf, tp = r["training_fjord"], r["training_feast"]
    rows = [
        (
            "point-in-time retrieval, first call",
            f"{hf['cold_seconds']:.1f} s",
            f"{hp['cold_seconds']:.1f} s",
            f"{hp['cold_seconds'] / hf['cold_seconds']:.1f}x faster",
        ),
        (
            "point-in-time retrieval, second call",
            f"{hf['seconds']:.1f} s",
            f"{hp['seconds']:.1f} s",
            f"{hp['seconds'] / hf['seconds']:.1f}x faster",
        ),
        (
            "point-in-time retrieval, peak RSS",
            f"{hf['peak_rss_mb']:.0f} MB",
            f"{hp['peak_rss_mb']:.0f} MB",
            f"{hf['peak_rss_mb'] / hp['peak_rss_mb']:.2f}",
        ),
        (
            f"results agree (rows; sum and nulls of all {len(hf['features'])} features)",
            str(hf["rows"]),
            str(hp["rows"]),
            "yes" if not wrong else f"NO: {', '.join(wrong)}",
        ),
        (
            "training data: create_training_data + get_training_data vs to_df(), second call",
            f"{tf['seconds']:.1f} s",
            f"{tp['seconds']:.1f} s",
            f"{tp['seconds'] / tf['seconds']:.1f}x faster",
        ),
        (
            "training data, first call",
            f"{tf['cold_seconds']:.1f} s",
            f"{tp['cold_seconds']:.1f} s",
            f"{tp['cold_seconds'] / tf['cold_seconds']:.1f}x faster",
        ),
        (
            "create_training_data over the join alone (into pandas)",
            f"{tf['create_seconds']:.2f} s / {tf['join_seconds']:.2f} s",
            "",
            f"{tf['create_seconds'] / tf['join_seconds']:.2f}x (goal <= 1.3x)",
        ),
        (
            "training data results agree",
            str(tf["rows"]),
            str(tp["rows"]),
            "yes" if not disagreements(tf, tp) else f"NO: {', '.join(disagreements(tf, tp))}",
        ),
        (
            "online, one entity, p50",
            f"{of['single_p50_ms']:.2f} ms",
            f"{op['single_p50_ms']:.2f} ms",
            f"{op['single_p50_ms'] / of['single_p50_ms']:.1f}x lower",
        ),
        (
            "online, one entity, p99",
            f"{of['single_p99_ms']:.2f} ms",
            f"{op['single_p99_ms']:.2f} ms",
            f"{op['single_p99_ms'] / of['single_p99_ms']:.1f}x lower",
        ),
        (
            "online, batch of 100, p99",
            f"{of['batch100_p99_ms']:.2f} ms",
            f"{op['batch100_p99_ms']:.2f} ms",
            f"{op['batch100_p99_ms'] / of['batch100_p99_ms']:.1f}x lower",
        ),
        ("insert from pandas", f"{ins['pandas_rows'] / ins['pandas_seconds']:,.0f} rows/s", "", ""),
        ("insert from Spark", f"{ins['spark_rows'] / ins['spark_seconds']:,.0f} rows/s", "", ""),
    ]
    print("| measure | Fjord | Feast | Fjord vs Feast |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("ours-"):
        command, data_dir = sys.argv[1], Path(sys.argv[2])
        if command == "ours-insert":
            result = ours_insert(data_dir)
        elif command == "ours-historical":
            result = ours_historical(data_dir)
        elif command == "ours-training-data":
            result = ours_training_data(data_dir)
        else:
            result = ours_online(data_dir, int(sys.argv[3]))
        print(json.dumps(result))
    else:
        main()
