"""``fjord up | down | status | logs``: the whole local stack on loopback, in one command each.

``up`` starts, in order, the embedded services ``services.up`` names (Kafka by default), the MLflow
tracking server, Airflow (api-server, scheduler, dag-processor, triggerer), the model server of
every project that has a serving, a streaming monitor per served model that logs its inputs
(``monitor.enabled``) and the monitoring dashboard; each is found running if it already is, so ``up``
twice is harmless. It prints every URL and how to log in to Airflow. ``down`` stops all of them, with
every process they forked: Airflow, then what uses the services, then the services, each wave at
once. Servers configured elsewhere (``mlflow.tracking_uri``, ``airflow.api_url``,
``kafka.bootstrap_servers``) are used, not started.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.table import Table

from fjord.cli.output import console, print_json
from fjord.config import Settings, get_settings


@dataclass
class Component:
    """One line of ``fjord status``."""

    name: str
    running: bool
    url: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    detail: str = ""


def _servings() -> list[str]:
    """The projects with a serving (their model servers are part of the stack)."""
    from fjord.projects import list_projects
    from jobs.serve import serving

    return [p.name for p in list_projects() if serving.get_servings(project=p.name)]


def _monitored() -> list[tuple[str, str]]:
    """(project, serving) of every served model that logs its inputs: what ``up`` monitors."""
    from fjord.projects import list_projects
    from jobs.serve import serving

    return [
        (p.name, s.name)
        for p in list_projects()
        for s in serving.get_servings(project=p.name)
        if s.inference_logging in ("ALL", "MODEL_INPUTS")
    ]


def airflow_login(settings: Settings) -> str:
    """How to log in to the Airflow UI: the configured user, and the embedded Airflow's password."""
    if settings.airflow.api_url:
        return f"user {settings.airflow.username}"
    from fjord.airflow.stack import airflow_service

    service = airflow_service(settings)
    return f"user {settings.airflow.username}, password {service.password()} (in {service.passwords_file})"


def mlflow_login(settings: Settings) -> str:
    """How to log in to the MLflow UI: the embedded server's login, or MLflow's own variables."""
    if settings.mlflow.tracking_uri:
        return "login: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
    from fjord.experiment.tracking import login, mlflow_home

    credentials = login(settings)
    where = mlflow_home(settings) / "credentials.json"
    return f"user {credentials['username']}, password {credentials['password']} (in {where})"


def start_stack(settings: Settings, echo: Callable[[str], None]) -> dict[str, str]:
    """Start every component that is not running; name -> URL.

    The embedded services, MLflow and Airflow do not need one another to start, so they start side by
    side (each mostly waits on its own process); the model servers follow."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from fjord.airflow.stack import airflow_service
    from fjord.experiment.tracking import start_server
    from fjord.services import services
    from jobs.serve import serving

    starts: dict[str, Callable[[], str]] = {s.name: s.start for s in services(settings.services.up, settings)}
    if not settings.mlflow.tracking_uri:
        starts["mlflow"] = lambda: start_server(settings)
    if not settings.airflow.api_url:
        starts["airflow"] = airflow_service(settings).start
    urls: dict[str, str] = {}
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(starts) or 1) as pool:
        futures = {pool.submit(start): name for name, start in starts.items()}
        for future in as_completed(futures):
            name = futures[future]
            urls[name] = future.result()  # the first failure is raised; the others still finish
            echo(f"{name:<13} {urls[name]}  ({time.monotonic() - began:.1f} s)")
    for project in _servings():
        began = time.monotonic()
        name = f"model-server/{project}"
        urls[name] = serving.start(project=project)
        echo(f"{name:<13} {urls[name]}  ({time.monotonic() - began:.1f} s)")
    if settings.monitor.enabled:
        urls.update(start_monitors(echo))
    return urls


def start_monitors(echo: Callable[[str], None]) -> dict[str, str]:
    """A streaming monitor per served model, and the dashboard; name -> URL (or log)."""
    from jobs.monitor import service

    urls = {}
    for project, model in _monitored():
        began = time.monotonic()
        record = service.start(project, model)
        urls[f"monitor/{project}/{model}"] = record["log"]
        echo(f"monitor/{project}/{model}  running  ({time.monotonic() - began:.1f} s)")
    began = time.monotonic()
    urls["dashboard"] = service.dashboard_start()
    echo(f"{'dashboard':<13} {urls['dashboard']}  ({time.monotonic() - began:.1f} s)")
    return urls


def up() -> None:
    """Start the local stack (Kafka, MLflow, Airflow, model servers) and print every URL."""
    settings = get_settings()
    console.print(f"Fjord stack in {settings.home}")
    urls = start_stack(settings, console.print)
    if "airflow" in urls:
        console.print(f"\nAirflow UI    {urls['airflow']}  ({airflow_login(settings)})")
    if "mlflow" in urls:
        console.print(f"MLflow UI     {urls['mlflow']}  ({mlflow_login(settings)})")
    if "dashboard" in urls:
        from jobs.monitor.service import dashboard_login

        console.print(f"Monitoring    {dashboard_login(urls['dashboard'])}")
    console.print("stop it all:  fjord down     ·     state: fjord status     ·     logs: fjord logs NAME")


def _components(settings: Settings) -> list[Component]:
    from fjord.airflow.stack import airflow_service
    from fjord.experiment.tracking import mlflow_home, server_status
    from fjord.services import services
    from jobs.serve import serving

    found: list[Component] = []
    for service in services(None, settings):
        s = service.status()
        found.append(
            Component(s.name, s.running, s.address, s.pids, sorted(s.state_dir.glob("*.log")), s.detail)
        )
    mlflow = server_status(settings)
    mlflow_dir = mlflow_home(settings)
    found.append(
        Component("mlflow", mlflow is not None, (mlflow or {}).get("uri"),
                  {"server": mlflow["pid"]} if mlflow else {}, sorted(mlflow_dir.glob("*.log")))
    )  # fmt: skip
    airflow = airflow_service(settings)
    s = airflow.status()
    detail = s.detail
    if s.running:
        health = airflow.health() or {}
        late = [k for k, v in health.items() if (v or {}).get("status") != "healthy"]
        detail = f"unhealthy: {', '.join(late)}" if late else ""
    found.append(
        Component("airflow", s.running, s.address, s.pids, sorted(s.state_dir.glob("*.log")), detail)
    )
    for project in _servings():
        state = serving.server_state(project)
        log = settings.home / "serving" / project / "server.log"
        found.append(
            Component(f"model-server/{project}", state is not None, (state or {}).get("url"),
                      {"server": state["pid"]} if state else {}, [log] if log.exists() else [])
        )  # fmt: skip
    from jobs.monitor import service as monitors

    for project, model in _monitored():
        record = monitors.state(project, model)
        log = settings.home / "monitor" / project / model / "monitor.log"
        described = monitors.describe(project, model)
        found.append(
            Component(f"monitor/{project}/{model}", record is not None, None,
                      {"supervisor": record["pid"]} if record else {}, [log] if log.exists() else [],
                      described if described.startswith("down") else "")
        )  # fmt: skip
    board = monitors.dashboard_state()
    board_log = settings.home / "monitor" / "dashboard.log"
    found.append(
        Component("dashboard", board is not None, (board or {}).get("url"),
                  {"server": board["pid"]} if board else {}, [board_log] if board_log.exists() else [])
    )  # fmt: skip
    return found


def _attempt(stop: Callable[[], bool]) -> bool | str:
    """``stop()``, or the one-line error it raised: one component that cannot be stopped does not keep
    ``down`` from stopping the others."""
    from fjord.errors import FjordError

    try:
        return stop()
    except FjordError as exc:
        return f"not stopped: {exc.one_line()}"


def down() -> None:
    """Stop every component of the local stack; no process is left behind."""
    from fjord.airflow.stack import airflow_service
    from fjord.experiment.tracking import stop_server
    from fjord.services import services
    from jobs.serve import serving

    settings = get_settings()
    from jobs.monitor import service

    # In three waves, each stopped at once: Airflow first (a task still running could otherwise start
    # a model server after its stop); then what uses the services (monitors, dashboard, model
    # servers, MLflow); then the services themselves.
    Steps = list[tuple[str, Callable[[], bool]]]
    airflow = airflow_service(settings)
    # What runs is found in FJORD_HOME (the processes' state files), not through the storage root's
    # servings: a down with another storage root in force still stops everything this home started.
    monitors = sorted({*_monitored(), *((r["project"], r["model"]) for r in service.running())})
    users: Steps = [(f"monitor/{p}/{m}", functools.partial(service.stop, p, m)) for p, m in monitors]
    users.append(("dashboard", service.dashboard_stop))
    model_servers = sorted({*_servings(), *serving.running_projects()})
    users += [(f"model-server/{p}", functools.partial(serving.stop, project=p)) for p in model_servers]
    users.append(("mlflow", lambda: stop_server(settings)))
    servers: Steps = [(s.name, s.stop) for s in reversed(services(None, settings))]
    for wave in ([("airflow", airflow.stop)], users, servers):
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            stopped = list(pool.map(lambda step: _attempt(step[1]), wave))
        for (name, _), done in zip(wave, stopped, strict=True):
            shown = done if isinstance(done, str) else "stopped" if done else "not running"
            console.print(f"{name:<20} {shown}", markup=False)
            if name == "airflow" and airflow.stopped_tasks:
                console.print(
                    f"{'':<20} with {len(airflow.stopped_tasks)} running task(s), stopped, not waited for "
                    "(the next `fjord up` finds them dead and Airflow retries them under the same run id):",
                    markup=False,
                )
                for task in airflow.stopped_tasks:
                    console.print(f"{'':<22}{task}", markup=False)


def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """What runs, where, as which processes."""
    components = _components(get_settings())
    if as_json:
        print_json([{**c.__dict__, "logs": [str(p) for p in c.logs]} for c in components])
        return
    table = Table("component", "state", "url", "pids")
    for c in components:
        state = "running" if c.running and not c.detail else (c.detail or "stopped")
        table.add_row(c.name, state, c.url or "", ", ".join(f"{k} {v}" for k, v in c.pids.items()))
    console.print(table)


def logs(
    name: str = typer.Argument(..., help="A component of `fjord status` (airflow, mlflow, kafka, ...)."),
    lines: int = typer.Option(40, "--lines", "-n", min=1, help="How many lines of each log."),
) -> None:
    """The last lines of a component's logs."""
    from fjord.errors import NotFoundError

    components = {c.name: c for c in _components(get_settings())}
    if name not in components:
        raise NotFoundError(f"no component {name!r}", hint=f"components: {', '.join(components)}")
    if not components[name].logs:
        console.print(f"{name} has no logs yet")
    for log in components[name].logs:
        text = log.read_text(errors="replace").splitlines()[-lines:]
        console.print(f"==> {log} <==")
        console.print("\n".join(text), markup=False)
