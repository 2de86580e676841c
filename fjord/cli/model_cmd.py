"""``fjord model deploy|rollback|shadow|canary|list|status|start|stop`` and ``fjord serve``:
registered models, their servings, replays of a candidate on archived traffic, the canary rule and
the project's model server (the stage is jobs/serve, loaded only when a command runs)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

import typer
from rich.table import Table

from fjord.cli.output import console, print_json

app = typer.Typer(help="Deploy, roll back and inspect served models (TF-Serving-compatible REST/gRPC).")

PROJECT = typer.Option(None, "--project", "-p", help="The project (default: the project setting).")


def _project(project: str | None) -> str:
    from fjord.config import get_settings
    from fjord.errors import ConfigError

    name = project or get_settings().project
    if not name:
        raise ConfigError("no project given", hint="--project NAME, or set FJORD_PROJECT")
    return name


class RuleMode(StrEnum):
    """What a request that breaks an input rule gets (jobs/serve/input_rules.py)."""

    reject = "reject"
    flag = "flag"


@app.command()
def deploy(
    model: str = typer.Argument(..., help="The registered model (MLflow name)."),
    project: str | None = PROJECT,
    version: int | None = typer.Option(None, min=1, help="Default: the MLflow candidate."),
    tolerance: float = typer.Option(0.005, min=0, help="Largest ROC AUC drop against the champion."),
    canary: bool = typer.Option(False, "--canary", help="Serve it as the canary beside the stable version."),
    canary_percent: float = typer.Option(
        10, min=0, max=100, help="With --canary: the share of calls it answers (the rest: stable)."
    ),
    canary_key: str | None = typer.Option(
        None, help="With --canary: the request field that keeps a caller on one side (card_id)."
    ),
    shadow: bool = typer.Option(
        False, "--shadow", help="Score every call beside the served version, logged, never answered."
    ),
    force: bool = typer.Option(False, "--force", help="Deploy even if it is not blessed."),
    inference_logging: str = typer.Option("ALL", help="ALL, PREDICTIONS, MODEL_INPUTS or NONE."),
    feature_view: str | None = typer.Option(None, help="VIEW[/VERSION]: fill request features online."),
    input_rules: str | None = typer.Option(
        None, help="An ETL expectation suite (transactions) whose row-wise rules every request must keep."
    ),
    input_rules_mode: RuleMode | None = typer.Option(
        None, help="reject (a 400 naming the rule, the default) or flag (served, the violations logged)."
    ),
    passthrough: list[str] | None = typer.Option(
        None, help="A request field logged with each call, never fed to the model (tid); repeatable."
    ),
) -> None:
    """Bless the candidate against the champion, serve it, smoke-test it, make it the champion."""
    from jobs.serve.deploy import DeploySpec, run

    result = run(
        DeploySpec(
            project=_project(project), model_name=model, version=version, tolerance=tolerance, canary=canary,
            canary_percent=canary_percent, canary_key=canary_key, shadow=shadow, force=force,
            inference_logging=inference_logging, feature_view=feature_view,
            input_rules=input_rules, input_rules_mode=cast(Any, input_rules_mode and input_rules_mode.value),
            passthrough=passthrough or None,
        )
    )  # fmt: skip
    console.print(result.summary())


@app.command()
def rollback(
    serving_name: str = typer.Argument(..., metavar="SERVING", help="The serving (named as its model)."),
    project: str | None = PROJECT,
) -> None:
    """Point the serving's stable label back at the version deployed before."""
    from jobs.serve.deploy import RollbackSpec, rollback

    console.print(rollback(RollbackSpec(project=_project(project), serving=serving_name)).summary())


@app.command("list")
def list_models(
    project: str | None = PROJECT, as_json: bool = typer.Option(False, "--json", help="Machine-readable.")
) -> None:
    """The project's servings: model, labels and versions, state, inference log topic."""
    from jobs.serve import serving

    name = _project(project)
    rows = [serving.get_status(s.name, project=name) for s in serving.get_servings(project=name)]
    if as_json:
        print_json(rows)
        return
    table = Table("serving", "model", "labels", "state", "versions", "topic")
    for row in rows:
        labels = ", ".join(f"{k} v{v}" for k, v in sorted(row["labels"].items()))
        versions = ", ".join(f"v{k} {v}" for k, v in sorted(row["versions"].items()))
        table.add_row(row["name"], row["model"], labels, row["state"], versions, row["topic"])
    console.print(table)


@app.command()
def status(
    serving_name: str = typer.Argument(..., metavar="SERVING"),
    project: str | None = PROJECT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable."),
) -> None:
    """One serving: its labels, each version's state, its URL and topic."""
    from jobs.serve import serving

    name = _project(project)
    row = serving.get_status(serving_name, project=name)
    state = serving.server_state(name)
    row["url"] = state["url"] if state else None
    if as_json:
        print_json(row)
        return
    for key, value in row.items():
        console.print(f"{key:<9} {value}")


_SPANS = {"m": 1 / 60, "h": 1.0, "d": 24.0}


def _hours(text: str) -> float:
    """``30m``, ``24h`` or ``7d`` as hours; a one-line error otherwise."""
    from fjord.errors import ConfigError

    number, unit = text[:-1], text[-1:].lower()
    try:
        hours = float(number) * _SPANS[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"--since {text!r}: expected a number and m, h or d (30m, 24h, 7d)") from None
    if not hours > 0:
        raise ConfigError(f"--since {text!r}: the window must be longer than nothing")
    return hours


@app.command()
def shadow(
    serving: str = typer.Argument(..., help="The serving whose archived traffic is replayed."),
    candidate: int = typer.Option(..., min=1, help="The model version to judge."),
    project: str | None = PROJECT,
    since: str = typer.Option("24h", help="The window: the last 30m, 24h, 7d..."),
    start: str | None = typer.Option(None, "--from", help="Or from this time (ISO 8601) ..."),
    end: str | None = typer.Option(None, "--to", help="... to this one."),
    output: str | None = typer.Option(None, help="The output compared (default: the first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Replay a candidate on the requests the served versions answered: decision agreement and flips,
    score shift, latency, and realized ROC AUC of both where labels landed (docs/serving.md)."""
    from dataclasses import asdict

    from pydantic import ValidationError

    from fjord.errors import ConfigError
    from jobs.serve.replay import ReplaySpec, run

    try:
        window: dict[str, Any] = {"since_hours": _hours(since), "start_time": start, "end_time": end}
        spec = ReplaySpec(project=_project(project), serving=serving, candidate=candidate, output=output,
                          **window)  # fmt: skip
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"])) or "options"
        raise ConfigError(f"{where}: {error['msg']}") from None
    result = run(spec)
    if as_json:
        print_json(asdict(result))
        return
    console.print(result.summary(), markup=False)
    for flip in result.flipped[:10]:
        console.print(f"  flip {flip['inference_id']} row {flip['row']} (v{flip['version']}): served "
                      f"{flip['served']:.4f} -> candidate {flip['candidate']:.4f}", markup=False)  # fmt: skip
    console.print(f"result: {result.uri}", markup=False)


@app.command()
def canary(
    serving: str = typer.Argument(..., help="The serving whose canary is judged."),
    project: str | None = PROJECT,
    min_requests: int = typer.Option(500, min=1, help="Calls the canary needs before a decision."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and record, change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Promote the serving's canary to stable or roll it back, on its error rate, latency and
    estimated and realized ROC AUC against stable's since it started; or wait for more calls."""
    from jobs.serve.canary import CanarySpec, run

    result = run(CanarySpec(project=_project(project), serving=serving, min_requests=min_requests,
                            dry_run=dry_run))  # fmt: skip
    if as_json:
        print_json(result.to_json())
        return
    console.print(result.summary(), markup=False)


@app.command()
def start(project: str | None = PROJECT) -> None:
    """Start the project's model server (it serves every serving of the project)."""
    from jobs.serve import serving

    console.print(serving.start(project=_project(project)))


@app.command()
def stop(project: str | None = PROJECT) -> None:
    """Stop the project's model server."""
    from jobs.serve import serving

    console.print("stopped" if serving.stop(project=_project(project)) else "not running")


@app.command()
def token(
    project: str | None = PROJECT,
    new: bool = typer.Option(False, "--new", help="Give the server a new token (the old one stops working)."),
    remove: bool = typer.Option(False, "--remove", help="Let any local caller in again."),
) -> None:
    """The project's model server token: with one, every REST and gRPC call needs
    ``Authorization: Bearer <token>``. Printed only when asked for; the server takes a change when it
    starts again (fjord model stop, then start)."""
    from fjord.errors import NotFoundError
    from jobs.serve import serving

    name = _project(project)
    if new and remove:
        raise typer.BadParameter("give --new or --remove, not both")
    if remove:
        console.print("token removed" if serving.remove_token(project=name) else "the server had no token")
    elif new:
        print(serving.new_token(project=name))
    elif (value := serving.token(project=name)) is not None:
        print(value)
    else:
        raise NotFoundError(f"the model server of project {name} has no token", hint="--new gives it one")
    if (new or remove) and serving.server_state(name) is not None:
        console.print("the running server keeps the old setting until: fjord model stop && fjord model start")


def serve(ctx: typer.Context) -> None:
    """Run the model server in the foreground: tensorflow_model_server's flags (see --help)."""
    from jobs.serve.server import main

    raise typer.Exit(main(list(ctx.args)))
