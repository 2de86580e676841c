"""``fjord run``: the platform's main job on the configured stack (``make run``).

It runs every stage that exists, in pipeline order, and prints what a newcomer needs to see. Today
that is the foundation: the settings in force, the demo project, its Python environment, a Spark
session in that environment, an atomically published dataset written by Spark executors and read back,
and the run record whose lineage leads back to the raw input. Each later stage (ETL and validation,
feature store, training, serving, monitoring) joins here as it lands, until the Airflow DAG runs it all.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import typer

from fjord.cli.output import console
from fjord.config import get_settings
from fjord.envs import build_environment
from fjord.lineage import lineage_tree, raw_sources, track_run
from fjord.projects import ensure_project
from fjord.spark import get_spark

SMOKE_INPUT = "Resources/landing/_fjord_smoke/numbers.csv"
SMOKE_OUTPUT = "Resources/smoke/squares"


def _step(number: int, text: str) -> float:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")
    return time.perf_counter()


def _done(started: float, text: str = "") -> None:
    console.print(f"   [green]ok[/green] {text} [dim]({time.perf_counter() - started:.1f} s)[/dim]")


def run(
    project: str = typer.Option("fraud", help="Project to run the pipeline in (created if missing)."),
) -> None:
    """Run the platform's main job on the configured stack (the embedded defaults unless configured)."""
    settings = get_settings()
    console.print("[bold]Fjord main job[/bold]")
    console.print(f"   shared filesystem  {settings.storage.root}")
    console.print(f"   spark master       {settings.spark.master}")
    console.print(f"   metadata           {settings.metadata.url}")

    t = _step(1, f"Project '{project}'")
    proj = ensure_project(project, description="Card fraud detection (the flagship demo)")
    _done(t, proj.root_uri)

    t = _step(2, "Project Python environment (platform packages + the project's spec)")
    env = build_environment(proj)
    _done(t, f"{env.key}, lock {env.lock_hash}, additions: {', '.join(env.additions) or 'none'}")

    t = _step(3, "Spark session in the project environment")
    spark = get_spark(proj, app_name="fjord-main")
    _done(t, f"Spark {spark.version} on {spark.sparkContext.master}")

    t = _step(4, "Spark job: raw batch -> atomically published dataset, with its run record")
    raw = "".join(f"{i}\n" for i in range(1000))
    proj.fs.write_text(SMOKE_INPUT, "n\n" + raw)
    raw_version = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:16]
    with track_run(proj, "smoke", params={"rows": 1000}, code=[Path(__file__)]) as record:
        record.add_input(proj.fs.uri(SMOKE_INPUT), raw_version, kind="raw")
        numbers = spark.read.csv(proj.fs.spark_uri(SMOKE_INPUT), header=True, schema="n long")
        with proj.fs.publish(SMOKE_OUTPUT, overwrite=True) as out:
            numbers.selectExpr("n", "n * n AS square").write.mode("overwrite").parquet(out.spark_uri())
        total = spark.read.parquet(proj.fs.spark_uri(SMOKE_OUTPUT)).selectExpr("sum(square)").collect()[0][0]
        record.add_output(proj.fs.uri(SMOKE_OUTPUT), record.run_id, kind="dataset")
    published = proj.fs.publication(SMOKE_OUTPUT)
    _done(t, f"{published['files']} files, sum of squares {total}, run {record.run_id}")

    t = _step(5, "Provenance: walk back from the published dataset")
    tree = lineage_tree(proj.fs.uri(SMOKE_OUTPUT), record.run_id)
    for source in raw_sources(tree):
        console.print(
            f"   {proj.fs.uri(SMOKE_OUTPUT)} <- {tree.run.stage if tree.run else '?'} <- {source.uri}"
        )
    _done(t)

    console.print("\n[bold]Next[/bold]: fjord project show " + project + " · fjord env show " + project)
    console.print(f"      fjord lineage show {proj.fs.uri(SMOKE_OUTPUT)}")
    console.print(
        "[dim]ETL, feature store, training, serving and monitoring join this job as they land.[/dim]"
    )
