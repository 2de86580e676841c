"""``fjord lineage show|runs``: walk provenance backwards from an artifact."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.tree import Tree

from fjord.cli.output import console, print_json
from fjord.errors import NotFoundError
from fjord.lineage import LineageNode, get_run, lineage_graph, list_runs

app = typer.Typer(help="Provenance: which run made an artifact, from what.", no_args_is_help=True)


def _label(node: LineageNode) -> str:
    version = f" @ {node.artifact.version}" if node.artifact.version else ""
    text = f"[bold]{node.artifact.uri}[/bold]{version}"
    if node.run is None:
        return text + "  [dim](raw input)[/dim]"
    run = node.run
    return (
        f"{text}\n[cyan]made by {run.stage} run {run.run_id}[/cyan] "
        f"({run.status}, {run.started_at:%Y-%m-%d %H:%M}, code {run.code_version}, env {run.env_lock_hash})"
    )


def _grow(tree: Tree, node: LineageNode, shown: dict[tuple[str, str], int]) -> None:
    """Add ``node``'s inputs under ``tree``; an artifact already shown is named again by its number,
    not expanded again, so shared ancestors (and cycles) print once."""
    for child in node.inputs:
        if child.key in shown:
            tree.add(f"[dim]{child.artifact.uri} @ {child.artifact.version} (see [{shown[child.key]}])[/dim]")
            continue
        shown[child.key] = len(shown) + 1
        _grow(tree.add(f"[{shown[child.key]}] {_label(child)}"), child, shown)


@app.command("show")
def show(
    uri: str = typer.Argument(..., help="Artifact URI (as the run recorded it)."),
    version: str | None = typer.Option(None, "--version", "-v", help="Version / commit id."),
) -> None:
    """Walk backwards from an artifact to the raw data it came from."""
    node = lineage_graph(uri, version)
    if node.run is None:
        raise NotFoundError(f"no recorded run produced {uri}" + (f" at version {version}" if version else ""))
    shown = {node.key: 1}
    tree = Tree(f"[1] {_label(node)}")
    _grow(tree, node, shown)
    console.print(tree)


@app.command("runs")
def runs(
    project: str | None = typer.Option(None, help="Only this project's runs."),
    stage: str | None = typer.Option(None, help="Only this stage's runs."),
    limit: int = typer.Option(20, min=1),
) -> None:
    """List recent runs."""
    table = Table("run id", "stage", "status", "started", "outputs")
    for run in list_runs(project, stage, limit):
        table.add_row(
            run.run_id, run.stage, run.status, f"{run.started_at:%Y-%m-%d %H:%M:%S}", str(len(run.outputs))
        )
    console.print(table)


@app.command("run")
def run(run_id: str) -> None:
    """Show one run record."""
    print_json(get_run(run_id).model_dump(mode="json"))
