"""``fjord demo data``: land realistic synthetic card transactions in a project (the flagship demo)."""

from __future__ import annotations

from datetime import date

import typer

from fjord.cli.output import console
from fjord.errors import FjordError
from fjord.projects import ensure_project, get_project

app = typer.Typer(help="Demo data for the flagship fraud-detection pipeline.", no_args_is_help=True)


@app.command("data")
def data(
    project: str = typer.Option("fraud", help="Project to land the data in."),
    create: bool = typer.Option(False, "--create", help="Create the project if it does not exist."),
    rows: int = typer.Option(100_000, min=1, help="Transactions in all."),
    days: int = typer.Option(7, min=1, help="Daily batches."),
    seed: int = typer.Option(42, help="Same seed, same data."),
    start: str | None = typer.Option(
        None, help="Date of the first batch (YYYY-MM-DD); default: the batches end yesterday (UTC)."
    ),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
) -> None:
    """Write daily batches of transactions, labels and profiles into Resources/landing/<date>/."""
    from jobs.etl.demo_data import DemoSpec, generate, recent_start  # a stage: loaded only when asked for

    try:
        first = date.fromisoformat(start) if start else recent_start(days)
        spec = DemoSpec(rows=rows, days=days, seed=seed, start=first, fmt=fmt)
        proj = ensure_project(project) if create else get_project(project)
        with console.status(f"generating {rows:,} transactions in {days} daily batches..."):
            batches = generate(proj.fs, spec)
    except ValueError as exc:
        raise FjordError(f"demo data: {exc}") from None
    console.print(
        f"landed {len(batches)} batches in {proj.fs.uri('Resources/landing')}: "
        f"{batches[0]} .. {batches[-1]} ({fmt})"
    )
