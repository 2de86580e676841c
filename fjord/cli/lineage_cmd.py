"""``fjord lineage show|runs|run``: walk provenance backwards from an artifact (a summary first, then
the graph to ``--depth``; ``--json`` for scripts)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.tree import Tree

from fjord.cli.output import console, print_json
from fjord.errors import NotFoundError
from fjord.lineage import LineageNode, get_run, lineage_graph, list_runs, raw_sources, walk

app = typer.Typer(help="Provenance: which run made an artifact, from what.", no_args_is_help=True)


def _label(node: LineageNode) -> str:
    version = f" @ {node.artifact.version}" if node.artifact.version else ""
    text = f"{node.artifact.uri}{version}"
    if node.run is None:
        return text + "  (raw input)"
    run = node.run
    return (
        f"{text}\nmade by {run.stage} run {run.run_id} "
        f"({run.status}, {run.started_at:%Y-%m-%d %H:%M}, code {run.code_version}, env {run.env_lock_hash})"
    )


def _grow(tree: Tree, node: LineageNode, shown: dict[tuple[str, str], int], depth: int) -> None:
    """Add ``node``'s inputs under ``tree``, ``depth`` levels deep; an artifact already shown is named
    again by its number, not expanded again, so shared ancestors (and cycles) print once."""
    if depth <= 0 and node.inputs:
        tree.add(f"... {len(node.inputs)} input(s) further back (--depth to see more)")
        return
    for child in node.inputs:
        if child.key in shown:
            tree.add(f"{child.artifact.uri} @ {child.artifact.version} (see [{shown[child.key]}])")
            continue
        shown[child.key] = len(shown) + 1
        _grow(tree.add(f"[{shown[child.key]}] {_label(child)}"), child, shown, depth - 1)


def _as_uri(target: str) -> str:
    """An artifact's URI as runs record it: a URI as it is, a local path as a ``file://`` URI."""
    from pathlib import Path

    return target if "://" in target else Path(target).expanduser().resolve().as_uri()


def _summary(node: LineageNode) -> dict[str, Any]:
    """What a reader wants first: the raw inputs with their checksums, the versions of each kind of
    artifact in the graph, and the code and environment of the runs."""
    nodes = list(walk(node))
    runs = {n.run.run_id: n.run for n in nodes if n.run is not None}
    by_kind: dict[str, list[str]] = {}
    for n in nodes:
        if n.run is not None and n is not node:
            by_kind.setdefault(n.artifact.kind or "artifact", []).append(
                f"{n.artifact.uri.rstrip('/').rsplit('/', 1)[-1]}@{n.artifact.version}"
            )
    return {
        "artifact": node.artifact.model_dump(),
        "made_by": {"run_id": node.run.run_id, "stage": node.run.stage} if node.run else None,
        "raw_inputs": [a.model_dump() for a in raw_sources(node)],
        "upstream": {kind: sorted(set(items)) for kind, items in sorted(by_kind.items())},
        "runs": len(runs),
        "code_versions": sorted({r.code_version for r in runs.values()}),
        "environments": sorted({r.env_lock_hash for r in runs.values()}),
    }


def _graph(node: LineageNode, seen: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The graph as JSON: each artifact once in full, later mentions by ``ref``."""
    seen = set() if seen is None else seen
    entry: dict[str, Any] = node.artifact.model_dump()
    if node.key in seen:
        return {"ref": entry}
    seen.add(node.key)
    if node.run is not None:
        entry["run"] = {"run_id": node.run.run_id, "stage": node.run.stage, "status": node.run.status}
        entry["inputs"] = [_graph(child, seen) for child in node.inputs]
    return entry


@app.command("show")
def show(
    target: str = typer.Argument(..., help="Artifact URI (as the run recorded it) or a local path."),
    version: str | None = typer.Option(None, "--version", "-v", help="Version / commit id."),
    depth: int = typer.Option(4, "--depth", min=1, help="Levels of the graph to draw."),
    as_json: bool = typer.Option(False, "--json", help="The summary and the whole graph as JSON."),
) -> None:
    """Walk backwards from an artifact to the raw data it came from: a summary, then the graph."""
    uri = _as_uri(target)
    node = lineage_graph(uri, version)
    if node.run is None:
        raise NotFoundError(f"no recorded run produced {uri}" + (f" at version {version}" if version else ""))
    summary = _summary(node)
    if as_json:
        print_json({"summary": summary, "graph": _graph(node)})
        return
    raw = summary["raw_inputs"]
    console.print(f"{uri} @ {node.artifact.version}, made by {node.run.stage} run {node.run.run_id}")
    console.print(f"raw inputs ({len(raw)}):")
    for artifact in raw:
        console.print(f"  {artifact['uri']}  {artifact['version'] or ''}")
    for kind, items in summary["upstream"].items():
        console.print(f"{kind} ({len(items)}): {', '.join(items)}")
    console.print(
        f"{summary['runs']} runs; code {', '.join(summary['code_versions'])}; "
        f"environment {', '.join(summary['environments'])}"
    )
    shown = {node.key: 1}
    tree = Tree(f"[1] {_label(node)}")
    _grow(tree, node, shown, depth)
    console.print(tree)


@app.command("runs")
def runs(
    project: str | None = typer.Option(None, help="Only this project's runs."),
    stage: str | None = typer.Option(None, help="Only this stage's runs."),
    limit: int = typer.Option(20, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List recent runs."""
    if as_json:
        print_json([r.model_dump(mode="json") for r in list_runs(project, stage, limit)])
        return
    table = Table("run id", "stage", "status", "started", "outputs")
    for run in list_runs(project, stage, limit):
        status = f"{run.status}, reused {run.reused_from}" if run.reused_from else run.status
        table.add_row(
            run.run_id, run.stage, status, f"{run.started_at:%Y-%m-%d %H:%M:%S}", str(len(run.outputs))
        )
    console.print(table)


@app.command("run")
def run(run_id: str) -> None:
    """Show one run record."""
    print_json(get_run(run_id).model_dump(mode="json"))
