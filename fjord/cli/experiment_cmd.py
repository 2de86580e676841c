"""``fjord experiment list|show|rerun|output`` and ``fjord mlflow start|stop|status``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from fjord.cli.output import console, print_json

app = typer.Typer(help="Experiments: list, describe, re-run and fetch them.", no_args_is_help=True)
mlflow_app = typer.Typer(help="The embedded MLflow tracking server.", no_args_is_help=True)


def _metric(trial: dict, key: str | None) -> str:
    value = (trial.get("metrics") or {}).get(key) if key else None
    return f"{value:.4f}" if isinstance(value, float) else ""


@app.command("list")
def list_(
    project: str | None = typer.Option(None, help="Only this project's experiments."),
    limit: int = typer.Option(20, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recent experiments, newest first."""
    from fjord.experiment.history import list_experiments

    if as_json:
        print_json([r.model_dump(mode="json") for r in list_experiments(project, limit)])
        return
    table = Table("run id", "kind", "name", "status", "started", "best")
    for run in list_experiments(project, limit):
        best = run.params.get("best", {}).get("metrics", {})
        table.add_row(
            run.run_id,
            str(run.params.get("kind", "")),
            str(run.params.get("name", "")),
            run.status,
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            ", ".join(f"{k}={v:.4g}" for k, v in best.items()),
        )
    console.print(table)


@app.command("show")
def show(
    run_id: str, as_json: bool = typer.Option(False, "--json", help="The whole record as JSON.")
) -> None:
    """One experiment: what ran (function, parameters or space, seed, versions) and every trial."""
    from fjord.experiment.history import describe

    info = describe(run_id)
    if as_json:
        print_json(info)
        return
    key = info["optimization_key"]
    console.print(
        f"{info['run_id']}  {info['kind']} '{info['name']}' in project {info['project']}: "
        f"{info['status']}\nfunction {info['function']}, seed {info['seed']}, code {info['code_version']}, "
        f"env {info['env_lock_hash']}\n{info['definition']}\nfiles {info['uri']}"
    )
    table = Table("trial", "status", key or "metrics", "steps", "attempts", "seconds", "params / error")
    trials = info["trials"]
    # Parameters every trial shares (data, epochs) are in the definition above; show what varies.
    varying = {
        k for t in trials for k in t["params"] if len({json.dumps(u["params"].get(k)) for u in trials}) > 1
    }
    for trial in trials:
        params = (
            {k: v for k, v in trial["params"].items() if k in varying} if len(trials) > 1 else trial["params"]
        )
        table.add_row(
            trial["trial"],
            trial["status"],
            _metric(trial, key) if key else str(trial.get("metrics")),
            str(trial["steps"]),
            str(trial["attempts"]),
            f"{trial['seconds']:.1f}",
            trial["error"]
            or ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()),
        )
    console.print(table)


@app.command("rerun")
def rerun(
    run_id: str,
    param: list[str] = typer.Option([], "--param", "-p", help="name=value to change (repeatable)."),
) -> None:
    """Run an experiment, or a training job run, again with the same inputs and seed (and changed
    parameters, if given: for a training run, any of its spec's fields)."""
    from fjord.experiment.history import parse_overrides
    from fjord.experiment.history import rerun as rerun_experiment
    from fjord.lineage import get_run

    overrides = parse_overrides(param)
    record = get_run(run_id)
    if record.stage == "train":  # the training job: its recorded spec, run again
        from jobs.train.job import TrainSpec
        from jobs.train.job import run as run_train

        spec = {k: v for k, v in record.params.items() if k in TrainSpec.model_fields}
        console.print(run_train(TrainSpec(**{**spec, **overrides})).summary())
        return
    console.print(rerun_experiment(run_id, overrides).summary())


@app.command("output")
def output(
    run_id: str,
    destination: Path = typer.Option(Path("."), "--to", help="Directory to copy the files into."),
) -> None:
    """Copy an experiment's files (trials, models, logs, TensorBoard events) to a local directory."""
    from fjord.experiment.history import fetch_output

    console.print(f"copied to {fetch_output(run_id, destination)}")


@mlflow_app.command("start")
def mlflow_start() -> None:
    """Start the embedded MLflow server (if it is not running); print its URI."""
    from fjord.experiment.tracking import start_server

    console.print(start_server())


@mlflow_app.command("stop")
def mlflow_stop() -> None:
    """Stop the embedded MLflow server."""
    from fjord.experiment.tracking import stop_server

    console.print("stopped" if stop_server() else "not running")


@mlflow_app.command("status")
def mlflow_status() -> None:
    """Whether the embedded MLflow server runs, and where."""
    from fjord.experiment.tracking import server_status

    status = server_status()
    console.print(f"running at {status['uri']} (pid {status['pid']})" if status else "not running")
