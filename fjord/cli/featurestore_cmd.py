"""``fjord featurestore list|show|search|commits|statistics``: the feature store's read side; and
``adopt``, which registers tables a new or restored metadata database does not know.

The feature store is a stage; it is imported inside each command, never when the CLI loads.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from fjord.cli.output import console, print_json

app = typer.Typer(
    help="Browse a project's feature store: groups, features, commits, statistics.", no_args_is_help=True
)


def _store(project: str) -> Any:
    import featurestore

    return featurestore.connect(project)


def _group(project: str, name: str, version: int | None) -> Any:
    return _store(project).get_feature_group(name, version)


@app.command("list")
def list_(project: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the project's feature groups and feature views."""
    store = _store(project)
    groups, views = store.get_feature_groups(), store.get_feature_views()
    if as_json:
        print_json(
            {
                "feature_groups": [
                    {"name": g.name, "version": g.version, "features": len(g.schema)} for g in groups
                ],
                "feature_views": [{"name": v.name, "version": v.version, "labels": v.labels} for v in views],
            }
        )
        return
    table = Table(
        "feature group", "version", "features", "primary key", "event time", "online", "description"
    )
    for g in groups:
        table.add_row(
            g.name,
            str(g.version),
            str(len(g.schema)),
            ", ".join(g.primary_key),
            g.event_time,
            "yes" if g.online_enabled else "no",
            g.description,
        )
    console.print(table if groups else f"no feature groups in {project} yet")
    if views:
        views_table = Table("feature view", "version", "labels", "training datasets")
        for v in views:
            views_table.add_row(
                v.name,
                str(v.version),
                ", ".join(v.labels),
                ", ".join(map(str, v.get_training_dataset_versions())) or "-",
            )
        console.print(views_table)


@app.command("show")
def show(
    project: str,
    name: str,
    version: int | None = typer.Option(None, "--version", "-v"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a feature group: its features, location, rows and latest commit."""
    g = _group(project, name, version)
    commits = g.commit_details(limit=1)
    total = g.count_rows() if commits else 0
    if as_json:
        latest = next(iter(commits.items()), None)
        print_json(
            {
                "name": g.name, "version": g.version, "description": g.description, "location": g.location,
                "primary_key": g.primary_key, "event_time": g.event_time, "online_enabled": g.online_enabled,
                "rows": total,
                "latest_commit": {"commit_id": latest[0], **latest[1]} if latest else None,
                "features": [f.model_dump() for f in g.schema],
            }
        )  # fmt: skip
        return
    console.print(f"{g.name} version {g.version}  {g.description}")
    console.print(
        f"  location  {g.location}\n  key       {', '.join(g.primary_key)}  event time {g.event_time}"
    )
    if commits:
        commit_id, detail = next(iter(commits.items()))
        console.print(f"  rows      {total:,} in the group")
        console.print(
            f"  latest    commit {commit_id} at {detail['committed_at']:%Y-%m-%d %H:%M:%S} "
            f"({detail['rows']:,} rows in that commit)"
        )
    table = Table("feature", "type", "role", "description")
    for f in g.schema:
        table.add_row(
            f.name,
            f.type,
            "primary key" if f.primary else "event time" if f.event_time else "",
            f.description,
        )
    console.print(table)


@app.command("search")
def search(
    project: str, text: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Find feature groups and features by name or description."""
    hits = _store(project).search(text)
    if as_json:
        print_json(hits)
        return
    table = Table("project", "feature group", "version", "matching features", "description")
    for h in hits:
        table.add_row(
            h["project"], h["feature_group"], str(h["version"]), ", ".join(h["features"]), h["description"]
        )
    console.print(table if hits else f"nothing matches {text!r}")


@app.command("commits")
def commits(
    project: str,
    name: str,
    version: int | None = typer.Option(None, "--version", "-v"),
    limit: int = typer.Option(20, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List a feature group's commits, newest first (rows: those each commit upserted)."""
    details = _group(project, name, version).commit_details(limit=limit)
    if as_json:
        print_json([{"commit_id": c, **d} for c, d in details.items()])
        return
    table = Table("commit", "committed at", "rows", "inserted", "updated", "run")
    for commit_id, d in details.items():
        table.add_row(
            str(commit_id),
            f"{d['committed_at']:%Y-%m-%d %H:%M:%S}",
            str(d["rows"]),
            str(d["rows_inserted"]),
            str(d["rows_updated"]),
            d["run_id"] or "",
        )
    console.print(table)


@app.command("statistics")
def statistics(
    project: str,
    name: str,
    version: int | None = typer.Option(None, "--version", "-v"),
    commit: int | None = typer.Option(None, help="Commit id (default: the latest)."),
    training_dataset: int | None = typer.Option(
        None,
        "--training-dataset",
        "-t",
        help="NAME is a feature view: this training dataset version.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (histograms, quantiles, bins)."),
) -> None:
    """Show the statistics of a feature group's commit, or of a feature view's training dataset."""
    if training_dataset is not None:
        if commit is not None:
            raise typer.BadParameter("--commit is a feature group's; a training dataset has its own version")
        view = _store(project).get_feature_view(name, version or 1)
        stats = view.get_training_dataset_statistics(training_dataset)
        title = f"training dataset {name}_{stats['feature_view_version']} v{training_dataset}"
    else:
        stats = _group(project, name, version).get_statistics(commit)
        title = f"commit {stats['commit_id']}"
    if as_json:
        print_json(stats)
        return
    console.print(f"{title}: {stats['rows']} rows")
    table = Table("feature", "type", "nulls", "min", "max", "mean", "std", "top")

    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)

    for name_, s in stats["features"].items():
        frequent = s.get("top") or [{"value": k, "count": n} for k, n in s.get("frequencies", {}).items()]
        top = ", ".join(f"{t['value']} ({t['count']})" for t in frequent[:3])
        table.add_row(
            name_,
            s["type"],
            str(s["nulls"]),
            fmt(s.get("min")),
            fmt(s.get("max")),
            fmt(s.get("mean")),
            fmt(s.get("std")),
            top,
        )
    console.print(table)


@app.command("adopt")
def adopt(project: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Register the project's feature group tables and commits that this metadata database does not
    know (after pointing metadata.url at a new database, or restoring an older one), from the tables'
    own descriptors and Delta logs. Stop the old database's writers first."""
    result = _store(project).adopt()
    if as_json:
        print_json({"groups": result.groups, "commits": result.commits, "reverted": result.reverted})
        return
    console.print(result.summary())
