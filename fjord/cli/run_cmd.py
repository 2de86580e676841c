"""``fjord run``: the platform's main job on the configured stack (``make run``).

It runs every stage that exists, in pipeline order, and prints what a newcomer needs to see:

1. the demo project;
2. its Python environment;
3. a Spark session in that environment;
4. a Spark job that turns a raw landing batch into features, published to the feature store;
5. a feature view with point-in-time training data and an online lookup;
6. the lineage of that training data, walked back to the raw batch.

Each later stage (the real ETL and validation job, training, serving, monitoring) joins here as it
lands, until the Airflow DAG runs it all.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pandas as pd
import typer

from fjord.cli.output import console
from fjord.config import get_settings
from fjord.envs import build_environment
from fjord.lineage import lineage_tree, raw_sources, track_run
from fjord.projects import ensure_project
from fjord.spark import get_spark

RAW_BATCH = "Resources/landing/_fjord_demo/events.csv"
DEMO_ROWS = 2000
DEMO_ENTITIES = 50


def _step(number: int, text: str) -> float:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")
    return time.perf_counter()


def _done(started: float, text: str = "") -> None:
    console.print(f"   [green]ok[/green] {text} [dim]({time.perf_counter() - started:.1f} s)[/dim]")


def _raw_batch() -> str:
    """A small, deterministic landing batch: events of 50 entities over 2000 minutes."""
    lines = ["entity,ts,value"]
    for i in range(DEMO_ROWS):
        minute = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(minutes=i)
        lines.append(f"{i % DEMO_ENTITIES},{minute.isoformat()},{(i * 7919) % 1000 / 10}")
    return "\n".join(lines) + "\n"


def run(
    project: str = typer.Option("fraud", help="Project to run the pipeline in (created if missing)."),
) -> None:
    """Run the platform's main job on the configured stack (the embedded defaults unless configured)."""
    import featurestore  # a stage: the CLI loads it only when the job runs

    settings = get_settings()
    console.print("[bold]Fjord main job[/bold]")
    console.print(f"   shared filesystem  {settings.storage.root}")
    console.print(f"   spark master       {settings.spark.master}")
    console.print(f"   metadata           {settings.metadata.url}")
    console.print(
        f"   feature store      join engine {settings.featurestore.join_engine}, "
        f"online store {settings.featurestore.online_store}"
    )

    t = _step(1, f"Project '{project}'")
    proj = ensure_project(project, description="Card fraud detection (the flagship demo)")
    _done(t, proj.root_uri)

    t = _step(2, "Project Python environment (platform packages + the project's spec)")
    env = build_environment(proj)
    _done(t, f"{env.key}, lock {env.lock_hash}, additions: {', '.join(env.additions) or 'none'}")

    t = _step(3, "Spark session in the project environment")
    spark = get_spark(proj, app_name="fjord-main")
    _done(t, f"Spark {spark.version} on {spark.sparkContext.master}")

    t = _step(4, "Spark job: raw landing batch -> features in the feature store (one commit each)")
    raw = _raw_batch()
    proj.fs.write_text(RAW_BATCH, raw)
    fs = featurestore.connect(project)
    features = fs.get_or_create_feature_group(
        "demo_entity_features",
        1,
        primary_key=["entity"],
        event_time="ts",
        online_enabled=True,
        description="Rolling value features per entity (demo)",
    )
    labels = fs.get_or_create_feature_group(
        "demo_labels", 1, primary_key=["entity"], event_time="ts", description="Demo labels"
    )
    with track_run(proj, "demo_etl", params={"rows": DEMO_ROWS}, code=[Path(__file__)]) as run:
        run.add_input(
            proj.fs.uri(RAW_BATCH), "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:16], kind="raw"
        )
        events = spark.read.csv(
            proj.fs.spark_uri(RAW_BATCH), header=True, schema="entity long, ts timestamp, value double"
        )
        engineered = events.selectExpr(
            "entity",
            "ts",
            "avg(value) OVER (PARTITION BY entity ORDER BY ts ROWS BETWEEN 4 PRECEDING AND CURRENT ROW)"
            " AS value_mean_5",
            "count(*) OVER (PARTITION BY entity ORDER BY ts) AS events_so_far",
        )
        commit = features.insert(engineered, run=run)  # Spark executors write; nothing collected
        label_frame = events.where("entity % 3 = 0").selectExpr(
            "entity", "ts", "cast(value > 50 AS int) AS label"
        )
        label_commit = labels.insert(label_frame, run=run)
    _done(
        t,
        f"{features.ref} commit {commit} ({features.statistics['rows']} rows), "
        f"{labels.ref} commit {label_commit}",
    )

    t = _step(5, "Feature view: point-in-time training data and an online lookup")
    query = labels.select_all().join(features.select(["value_mean_5", "events_so_far"]), on=["entity"])
    view = fs.get_or_create_feature_view("demo", 1, query=query, labels=["label"])
    version, _ = view.create_training_data()
    x_train, x_test, _, _ = view.train_test_split(
        test_size=0.2, time_ordered=True, training_dataset_version=version
    )
    vector = view.get_feature_vector({"entity": 3}, return_type="dict")
    _done(
        t,
        f"training dataset v{version}: {len(x_train)} train / {len(x_test)} test rows; "
        f"online entity 3: {vector}",
    )

    t = _step(6, "Provenance: walk back from the training dataset to the raw batch")
    tree = lineage_tree(proj.fs.uri(f"TrainingDatasets/demo_1/{version}"), str(version))
    for node in tree.inputs:
        console.print(
            f"   training dataset v{version} <- {node.artifact.uri.rsplit('/', 1)[-1]} commit "
            f"{node.artifact.version} <- {node.run.stage if node.run else '?'}"
        )
    for source in {s.uri: s for s in raw_sources(tree)}.values():
        console.print(f"   raw batch {source.uri} ({source.version})")
    _done(t)

    console.print(
        f"\n[bold]Next[/bold]: fjord featurestore list {project} · fjord featurestore statistics "
        f"{project} demo_entity_features · fjord lineage runs --project {project}"
    )
    console.print(
        "[dim]The ETL and validation job, training, serving and monitoring join this job as they land.[/dim]"
    )
