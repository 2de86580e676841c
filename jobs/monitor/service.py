"""The monitor and its dashboard as background processes of the local stack.

``start`` spawns ``python -m jobs.monitor.main`` for one (project, model), under a supervisor that
restarts it with back-off after any exit (:mod:`jobs.monitor.supervisor`), and records it under
``$FJORD_HOME/monitor/<project>/<model>/`` (pid, log, its options) at once, so a ``stop`` during the
start finds it; it returns once the streaming query runs. ``health``/``describe`` say whether it is
running or down between restarts. ``dashboard_start`` spawns the dashboard
(:mod:`jobs.monitor.dashboard`), one loopback port for every monitor of this home.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from fjord.config import get_settings
from fjord.errors import InvalidNameError
from fjord.private import write_private
from fjord.projects import validate_name
from fjord.services.process import (
    alive,
    free_port,
    log_says,
    log_size,
    port_open,
    spawn,
    stop_group,
    wait_until,
)  # fmt: skip
from jobs.monitor.supervisor import read_health

READY_LINE = "monitor: query started"
HEALTH_FILE = "health.json"
START_TIMEOUT_S = 240.0
REPO = Path(__file__).resolve().parents[2]


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _dir(project: str, model: str) -> Path:
    """The monitor's state directory; the names are checked first, so none reaches outside the home."""
    validate_name(project)
    if not _MODEL_NAME.fullmatch(model) or ".." in model:
        raise InvalidNameError(f"invalid model name {model!r}: letters, digits, '_', '.' or '-'")
    return get_settings().home / "monitor" / project / model


def results_of(project: str, model: str) -> Any:
    """The monitor results of ``model`` (a :class:`MonitorStore`): a model with no serving, no results
    and no monitor is a typo, and a typo is not found (exit 3, or a 404), never an empty status."""
    from fjord.errors import NotFoundError
    from fjord.projects import get_project
    from jobs.monitor.store import MONITORING, MonitorStore
    from jobs.serve import serving

    _dir(project, model)  # the names, before any path is made of them
    fs = get_project(project).fs
    served = {s.name for s in serving.get_servings(project=project)}
    results = set(fs.listdir(MONITORING)) if fs.exists(MONITORING) else set()
    if model not in served | results and state(project, model) is None:
        known = ", ".join(sorted(served | results)) or "none yet"
        raise NotFoundError(
            f"no model {model!r} is served or monitored in project {project} (models: {known})"
        )
    return MonitorStore(fs, model)


def _running(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` if its process is alive."""
    if not path.exists():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    return record if alive(record["pid"]) else None


def _launch(argv: list[str], log: Path, path: Path, record: dict[str, Any], ready: Any, what: str,
            timeout: float) -> dict[str, Any]:  # fmt: skip
    """Spawn ``argv``, record it at ``path`` at once (a stop during the start finds it), and wait
    until ``ready()``; on failure nothing is left running or recorded."""
    pid = spawn(argv, log, cwd=REPO)
    record = {"pid": pid, "log": str(log), "started": time.time(), **record}
    path.write_text(json.dumps(record))
    try:
        wait_until(ready, what=what, pid=pid, log=log, timeout=timeout)
    except BaseException:
        stop_group(pid, signal.SIGKILL, timeout=10)
        path.unlink(missing_ok=True)
        raise
    return record


def state(project: str, model: str) -> dict[str, Any] | None:
    """The running monitor's record, or None."""
    return _running(_dir(project, model) / "state.json")


def health(project: str, model: str) -> dict[str, Any] | None:
    """What the running monitor's supervisor last said (``state`` running or down, ``restarts``,
    ``last_exit``, ``restart_at``); None when no monitor runs."""
    if state(project, model) is None:
        return None
    return read_health(_dir(project, model) / HEALTH_FILE)


def describe(project: str, model: str) -> str:
    """``running``, ``down: exited -9, restart 2 in 4 s``, or ``stopped``: as status pages say it."""
    found = health(project, model)
    if state(project, model) is None:
        return "stopped"
    if found and found["state"] == "down":
        wait = max(0.0, found["restart_at"] - time.time())
        return f"down: exited {found['last_exit']}, restart {found['restarts'] + 1} in {wait:.0f} s"
    restarts = found["restarts"] if found else 0
    return f"running (restarted {restarts} time(s))" if restarts else "running"


def running() -> list[dict[str, Any]]:
    """Every running monitor of this home."""
    root = get_settings().home / "monitor"
    found = []
    for path in sorted(root.glob("*/*/state.json")):
        record = state(path.parent.parent.name, path.parent.name)
        if record:
            found.append(record)
    return found


def start(project: str, model: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the monitor of ``model`` unless it runs; its record."""
    from pydantic import ValidationError

    from fjord.errors import ConfigError
    from fjord.projects import get_project
    from jobs.monitor.job import MonitorSpec

    get_project(project)  # an unknown project is one line here, not a dead process
    existing = state(project, model)
    if existing:
        return existing
    configured = get_settings().monitor
    options = {
        "window_seconds": configured.window_seconds, "lateness_seconds": configured.lateness_seconds,
        "trigger_seconds": configured.trigger_seconds, "cooldown_seconds": configured.cooldown_seconds,
        **(options or {}),
    }  # fmt: skip
    try:
        spec = MonitorSpec(project=project, model_name=model, **options)  # checked before spawning
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"monitor option {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    directory = _dir(project, model)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "monitor.log"
    offset = log.stat().st_size if log.exists() else 0
    argv = [sys.executable, "-m", "jobs.monitor.main", f"--project={project}", f"--model-name={model}"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv.append(flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag}={value}")
    # Supervised: restarted with back-off after any exit (jobs/monitor/supervisor.py).
    health_file = directory / HEALTH_FILE
    health_file.unlink(missing_ok=True)
    backoff = str(configured.restart_backoff_seconds)
    argv = [sys.executable, "-m", "jobs.monitor.supervisor", str(health_file), backoff, "--", *argv]

    def ready() -> bool:
        with log.open("rb") as handle:
            handle.seek(offset)
            return READY_LINE.encode() in handle.read()

    record = {"project": project, "model": model, "spec": spec.model_dump(mode="json")}
    return _launch(argv, log, directory / "state.json", record, ready, f"the monitor of {model}",
                   START_TIMEOUT_S)  # fmt: skip


def stop(project: str, model: str) -> bool:
    """Stop the monitor; False if it was not running. The job gets SIGTERM alone first, so it stops
    its query while its JVM still answers; then whatever is left of its process group goes. A batch
    it was processing is processed again at the next start."""
    record = state(project, model)
    (_dir(project, model) / "state.json").unlink(missing_ok=True)
    if not record:
        return False
    pid = record["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_group(pid, signal.SIGKILL, timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the JVM, if the job exited before it
    return True


# -- the dashboard ---------------------------------------------------------------------------------


def _dashboard_file() -> Path:
    return get_settings().home / "monitor" / "dashboard.json"


def dashboard_state() -> dict[str, Any] | None:
    return _running(_dashboard_file())


def dashboard_token() -> str:
    """The dashboard's token: made on first use, kept mode 600 in ``monitor/dashboard_token``."""
    path = get_settings().home / "monitor" / "dashboard_token"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def dashboard_login(url: str, query: str = "") -> str:
    """The dashboard's link that logs the browser in (printed on the terminal, written nowhere)."""
    return f"{url}/?{query + '&' if query else ''}token={dashboard_token()}"


def dashboard_start(port: int | None = None) -> str:
    """Start the dashboard unless it runs; its URL (without the token: see ``dashboard_login``)."""
    existing = dashboard_state()
    if existing:
        return str(existing["url"])
    port = port or free_port(get_settings().monitor.dashboard_port)
    path = _dashboard_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.parent / "dashboard.log"
    argv = [sys.executable, "-m", "jobs.monitor.dashboard", f"--port={port}"]
    offset = log_size(log)  # its own "dashboard on" line, then the port (serving.start says why)
    bound = f"dashboard on http://127.0.0.1:{port}"
    ready = lambda: log_says(log, bound, offset) and port_open(port)  # noqa: E731
    record = _launch(argv, log, path, {"url": f"http://127.0.0.1:{port}"}, ready, "the monitor dashboard", 60)
    return str(record["url"])


def dashboard_stop() -> bool:
    record = dashboard_state()
    _dashboard_file().unlink(missing_ok=True)
    return bool(record) and stop_group(record["pid"], signal.SIGTERM)  # type: ignore[index]
