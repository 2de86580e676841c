"""Lineage: walking a year of daily batches back from a model version.

The history is what a year of the pipeline records: 365 daily ETL runs, each reading its three landing
files and the previous commit of all three feature groups and writing one commit per group (plus the
feature store's publish run, a child of the ETL run, that commits them), and every week a training
dataset over the latest commits and a model trained on it (52 of each). The walk starts from the
newest model version and must reach every raw landing file.

The peer is the walk this replaced: a tree walk with a per-path ``seen`` set and one ``producer_of``
lookup per visit. It revisits every shared ancestor once per path, so it is timed on the first few
days only (it grows about 9x per extra day; a month never returns).

Run: ``python -m bench.lineage --repeat 5 [--metadata-url postgresql://...]``. Prints a table and
writes its entry (``sqlite`` or ``postgresql``) of ``bench/results/lineage.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GROUPS = ("transactions_features", "fraud_labels", "profile_features")
FILES = ("transactions", "labels", "profiles")


def record_history(days: int, weekly_models: bool = True) -> tuple[str, str]:
    """Record ``days`` of pipeline runs in the current FJORD_HOME; the newest (uri, version) to walk from."""
    from fjord.lineage import track_run
    from fjord.projects import ensure_project

    project = ensure_project("fraud")
    fs = project.fs
    group_uri = {g: fs.uri(f"FeatureStore/{g}_1") for g in GROUPS}
    start: tuple[str, str] = (group_uri[GROUPS[0]], "1")
    newest_model: tuple[str, str] | None = None
    for day in range(1, days + 1):
        with track_run(project, "etl", params={"batch": day}) as etl:
            for name in FILES:
                etl.add_input(
                    fs.uri(f"Resources/landing/{day}/{name}.parquet"), f"sha256:{day}{name}", kind="raw"
                )
            with track_run(project, "featurestore.publish", parent_run_id=etl.run_id) as publish:
                publish.inputs = list(etl.inputs)
                for group in GROUPS:
                    if day > 1:
                        publish.add_input(group_uri[group], str(day - 1), kind="feature_group")
                    publish.add_output(group_uri[group], str(day), kind="feature_group")
            etl.inputs, etl.outputs = list(publish.inputs), list(publish.outputs)
        start = (group_uri[GROUPS[0]], str(day))
        if weekly_models and day % 7 == 0:
            week = day // 7
            dataset = fs.uri(f"TrainingDatasets/fraud_1/{week}")
            with track_run(project, "training_dataset") as td:
                for group in GROUPS:
                    td.add_input(group_uri[group], str(day), kind="feature_group")
                td.add_output(dataset, str(week), kind="training_dataset")
            with track_run(project, "train") as train:
                train.add_input(dataset, str(week), kind="training_dataset")
                train.add_output("models:/fraud", str(week), kind="model")
            newest_model = ("models:/fraud", str(week))
    return newest_model or start


def tree_walk(uri: str, version: str) -> tuple[int, int]:
    """The walk this replaced (``lineage_tree`` before): (producer lookups, raw leaves reached)."""
    from fjord.lineage import producer_of

    lookups = 0

    def walk(artifact_uri: str, artifact_version: str | None, seen: frozenset[Any], depth: int) -> int:
        nonlocal lookups
        key = (artifact_uri.rstrip("/"), artifact_version)
        if key in seen or depth >= 200:
            return 0
        lookups += 1
        run = producer_of(artifact_uri, artifact_version)
        if run is None:
            return 1
        return sum(walk(a.uri, a.version, seen | {key}, depth + 1) for a in run.inputs)

    leaves = walk(uri, version, frozenset(), 0)
    return lookups, leaves


def graph_walk(uri: str, version: str) -> tuple[int, int]:
    """The graph walk: (nodes, distinct raw sources)."""
    from fjord.lineage import lineage_graph, raw_sources, walk

    graph = lineage_graph(uri, version)
    return sum(1 for _ in walk(graph)), len(raw_sources(graph))


def _timed(fn: Any, *args: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - began)
    return times, result


def _in_home(days: int, metadata_url: str | None) -> Any:
    """A fresh FJORD_HOME with ``days`` of history; returns (home dir handle, start)."""
    from fjord.config import reset_settings

    home = tempfile.TemporaryDirectory(prefix="bench-lineage-")
    os.environ["FJORD_HOME"] = home.name
    if metadata_url:
        from sqlalchemy import create_engine, text

        database = f"bench_lineage_{days}_{int(time.time())}"
        with create_engine(metadata_url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f"CREATE DATABASE {database}"))
        os.environ["FJORD_METADATA__URL"] = metadata_url.rsplit("/", 1)[0] + f"/{database}"
    reset_settings()
    began = time.perf_counter()
    start = record_history(days)
    return home, start, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--metadata-url", help="a PostgreSQL server URL (a database is created on it)")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "days": args.days,
        "repeat": args.repeat,
        "metadata": args.metadata_url or "sqlite",
    }
    home, start, recording = _in_home(args.days, args.metadata_url)
    times, (nodes, sources) = _timed(graph_walk, *start, repeat=args.repeat)
    results["graph_walk"] = {
        "start": start,
        "nodes": nodes,
        "raw_sources": sources,
        "seconds": times,
        "recording_seconds": recording,
    }
    home.cleanup()

    peer = []
    for days in (2, 4, 6):
        home, start, _ = _in_home(days, args.metadata_url)
        tree_times, (lookups, leaves) = _timed(tree_walk, *start, repeat=max(1, args.repeat // 2))
        graph_times, (nodes, sources) = _timed(graph_walk, *start, repeat=args.repeat)
        peer.append(
            {
                "days": days,
                "tree_lookups": lookups,
                "tree_leaves": leaves,
                "tree_seconds": tree_times,
                "graph_nodes": nodes,
                "graph_raw_sources": sources,
                "graph_seconds": graph_times,
            }
        )
        home.cleanup()
    results["tree_walk_peer"] = peer

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "lineage.json"  # one entry per metadata database, kept across runs
    stored = json.loads(out.read_text()) if out.exists() else {}
    stored["postgresql" if args.metadata_url else "sqlite"] = results
    out.write_text(json.dumps(stored, indent=2))
    g = results["graph_walk"]
    database = "PostgreSQL" if args.metadata_url else "SQLite"
    print(f"| {args.days} daily batches, {database} | walk from {g['start'][0]} v{g['start'][1]} |")
    spread = f"min {min(times):.3f}, max {max(times):.3f}"
    median = statistics.median(times)
    print(
        f"| graph walk | median {median:.3f} s ({spread}), {g['nodes']} nodes, {g['raw_sources']} raw files |"
    )
    for row in peer:
        print(
            f"| {row['days']} days | tree walk {statistics.median(row['tree_seconds']):.3f} s, "
            f"{row['tree_lookups']} lookups | graph walk {statistics.median(row['graph_seconds']):.4f} s, "
            f"{row['graph_nodes']} nodes |"
        )


if __name__ == "__main__":
    main()
