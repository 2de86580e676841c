"""``fjord monitor start|stop|status|alerts|performance|skew|archive|dashboard``: the streaming monitor
of a served model, its inference archive, the realized performance once labels land, the
training/serving skew once features do, and the dashboard (the stages are jobs/monitor,
jobs/performance and jobs/skew, loaded only when a command runs)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from rich.table import Table

from fjord.cli.model_cmd import PROJECT, _project
from fjord.cli.output import console, print_json

app = typer.Typer(help="Watch served models: windowed metrics and drift from the inference log, alerts.")

MODEL = typer.Option("fraud", "--model", "-m", help="The served model.")


@app.command()
def start(
    project: str | None = PROJECT,
    model: str = MODEL,
    window_seconds: int | None = typer.Option(None, min=1, help="Tumbling window (default 60 s)."),
    lateness_seconds: int | None = typer.Option(None, min=0, help="Allowed lateness (default: a window)."),
    trigger_seconds: float | None = typer.Option(None, min=0.1, help="Micro-batch interval (default 5 s)."),
    numeric_test: str | None = typer.Option(None, help="psi (default) or wasserstein."),
    min_rows: int | None = typer.Option(None, min=1, help="Values a feature needs to be scored (500)."),
    cooldown_seconds: int | None = typer.Option(None, min=0, help="Between retraining alerts (3600)."),
) -> None:
    """Start the monitor of a served model in the background (it runs until `fjord monitor stop`)."""
    from jobs.monitor import service

    options = {k: v for k, v in {
        "window_seconds": window_seconds, "lateness_seconds": lateness_seconds,
        "trigger_seconds": trigger_seconds, "numeric_test": numeric_test, "min_rows": min_rows,
        "cooldown_seconds": cooldown_seconds,
    }.items() if v is not None}  # fmt: skip
    record = service.start(_project(project), model, options)
    console.print(f"monitor of {model} running (pid {record['pid']}); log {record['log']}")


@app.command()
def stop(project: str | None = PROJECT, model: str = MODEL) -> None:
    """Stop the monitor (a batch it was processing is processed again at the next start)."""
    from jobs.monitor import service

    stopped = service.stop(_project(project), model)
    console.print(f"monitor of {model} stopped" if stopped else f"the monitor of {model} was not running")


def _store(project: str, model: str) -> Any:
    from jobs.monitor import service

    return service.results_of(project, model)


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "")


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


@app.command()
def status(
    project: str | None = PROJECT,
    model: str = MODEL,
    last: int = typer.Option(10, min=1, help="Windows shown."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The monitor's state and its latest windows."""
    from jobs.monitor import service

    name = _project(project)
    store = _store(name, model)
    record = service.state(name, model)
    windows = store.windows()[-last:]
    if as_json:
        print_json({"running": record is not None, "state": service.describe(name, model),
                    "health": service.health(name, model), "pid": record and record["pid"],
                    "dead_letters": store.dead_letter_count(), "windows": windows})  # fmt: skip
        return
    described = service.describe(name, model)
    state = f"{described} (pid {record['pid']}, log {record['log']})" if record else described
    console.print(f"monitor of {name}/{model}: {state}; results {store.uri('windows')}")
    console.print(f"dead letters: {store.dead_letter_count()} ({store.uri('dead_letters')})")
    table = Table(
        "window", "v", "final", "requests", "errors", "p50 ms", "p95 ms", "positive", "drift", "late"
    )
    for w in windows:
        drift = (
            ", ".join(w["drifted_features"]) if w["drift"] else ("-" if w["drift_share"] is None else "no")
        )
        table.add_row(
            _time(w["window_start"]), str(w["version"]), "yes" if w["final"] else "open", str(w["requests"]),
            _fmt(w["error_rate"], ".1%"), _fmt(w["latency_p50_ms"]), _fmt(w["latency_p95_ms"]),
            _fmt(w["positive_rate"], ".1%"), drift, str(w["late"]),
        )  # fmt: skip
    console.print(table if windows else "no windows yet")


@app.command()
def alerts(
    project: str | None = PROJECT,
    model: str = MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every alert: its window, what crossed which threshold, and the retraining run it started."""

    store = _store(_project(project), model)
    parts = ("alerts", "performance_alerts", "skew_alerts")
    found = sorted((a for part in parts for a in store.alerts_of(part)), key=lambda a: a["created_at"])
    suspect = {m["alert_id"]: m["skew_alert_id"] for m in store.suspects()}
    for a in found:
        a["suspect_of_skew"] = suspect.get(a["alert_id"])
    if as_json:
        print_json(json.loads(json.dumps(found, default=str)))
        return
    table = Table("window", "v", "kind", "what", "state", "retraining run")
    for a in found:
        what = a["message"] + (" [suspect: skew in the same window]" if a["suspect_of_skew"] else "")
        table.add_row(_time(a["window_start"]), str(a["version"]), a["kind"], what, a["state"],
                      a["dag_run_id"] or "")  # fmt: skip
    console.print(table if found else "no alerts")


@app.command()
def performance(
    project: str | None = PROJECT,
    model: str = MODEL,
    refresh: bool = typer.Option(False, "--refresh", help="Join the labels landed so far first (the job)."),
    last: int = typer.Option(10, min=1, help="Windows shown."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Realized performance per version and window (labelled predictions) beside CBPE's estimate."""
    from jobs.performance.job import PerformanceSpec, window_line
    from jobs.performance.job import run as measure

    name = _project(project)
    if refresh:
        result = measure(PerformanceSpec(project=name, model_name=model, notify_airflow=False))
        windows = result.windows
    else:
        windows = _store(name, model).performance()
    windows = windows[-last:]
    if as_json:
        print_json(json.loads(json.dumps(windows, default=str)))
        return
    if not windows:
        console.print(
            f"no performance measured for {model} yet: labels join archived predictions "
            "(fjord monitor performance --refresh, or the pipeline's performance task)"
        )
        return
    for w in windows:
        console.print(window_line(w))


@app.command()
def skew(
    project: str | None = PROJECT,
    model: str = MODEL,
    refresh: bool = typer.Option(False, "--refresh", help="Compare the archived requests first (the job)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every window and feature)."),
) -> None:
    """Training/serving skew: per feature, the share of served inputs that differ from the features the
    ETL computed for the same rows, the mean difference and the worst rows by inference id."""
    from jobs.skew.job import SkewSpec, report_lines
    from jobs.skew.job import run as compare

    name = _project(project)
    if refresh:
        rows = compare(SkewSpec(project=name, model_name=model, notify_airflow=False)).rows
    else:
        rows = _store(name, model).skew()
    if as_json:
        print_json(json.loads(json.dumps(rows, default=str)))
        return
    if not rows:
        console.print(
            f"no skew measured for {model} yet: archived requests with a key meet the features the ETL "
            "computed for them (fjord monitor skew --refresh, or the pipeline's skew task)"
        )
        return
    for line in report_lines(rows):
        console.print(line, markup=False)


@app.command()
def archive(
    project: str | None = PROJECT,
    model: str = MODEL,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The inference archive: every logged request and response, kept past the topic's retention."""
    from fjord.projects import get_project
    from jobs.monitor.archive import InferenceArchive

    stats = InferenceArchive(get_project(_project(project)).fs, model).stats()
    if as_json:
        print_json(stats)
        return
    days = stats["days"]
    span = f"{days[0]} .. {days[-1]}" if days else "no days yet"
    console.print(f"{stats['uri']}: {stats['records']:,} records ({stats.get('requests', 0):,} requests, "
                  f"{stats.get('responses', 0):,} responses), {span}, versions {stats['versions']}, "
                  f"Delta version {stats['delta_version']}")  # fmt: skip


@app.command()
def dashboard(
    port: int | None = typer.Option(None, min=1, max=65535, help="Default: 8050 or a free port."),
    foreground: bool = typer.Option(False, "--foreground", help="Serve in this process until Ctrl-C."),
    stop_it: bool = typer.Option(False, "--stop", help="Stop the background dashboard."),
) -> None:
    """Start the monitoring dashboard (loopback) and print its URL."""
    from jobs.monitor import dashboard as page
    from jobs.monitor import service

    if stop_it:
        console.print("dashboard stopped" if service.dashboard_stop() else "the dashboard was not running")
        return
    if foreground:
        link = service.dashboard_login(f"http://127.0.0.1:{port or 8050}")
        console.print(f"dashboard on {link} (Ctrl-C stops it)")
        page.main([f"--port={port or 8050}"])
        return
    console.print(f"dashboard {service.dashboard_login(service.dashboard_start(port))}")
