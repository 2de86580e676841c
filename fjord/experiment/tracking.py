"""MLflow tracking: the embedded tracking server, and what an experiment logs to it.

``tracking_uri()`` is ``mlflow.tracking_uri`` when set (any MLflow server), else the embedded server:
``mlflow server`` on loopback with a SQLite backend in ``$FJORD_HOME/mlflow/`` and artifacts on the
shared filesystem, behind MLflow's basic-auth app with a login generated per home (see
``fjord.experiment.mlflow_auth``). It is started on first use, shared by every process of this Fjord
home, and stopped with ``fjord mlflow stop``.

An experiment is one MLflow run (named by its Fjord run id) with a nested run per trial: parameters,
metrics per reported step, final metrics, status, and the trial's files as artifacts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fjord.config import Settings, get_settings
from fjord.errors import FjordError
from fjord.fs import SharedFS, storage_root
from fjord.locks import locked
from fjord.private import write_private
from fjord.services.process import free_port, stop_group

AUTH_PROVIDER = "fjord"  # MLFLOW_TRACKING_AUTH: fjord.experiment.mlflow_auth
USERNAME = "fjord"
START_TIMEOUT_S = 180  # the first start migrates a new SQLite database: about 30 s here
_STATUS = {"succeeded": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


class TrackingError(FjordError):
    """The MLflow tracking server is unreachable or refused a request."""

    exit_code = 9


def _state_dir(settings: Settings) -> Path:
    return mlflow_home(settings)


def mlflow_home(settings: Settings) -> Path:
    """Where the embedded MLflow server keeps its state: ``<home>/mlflow``, or ``<home>/cluster/mlflow``
    in the cluster profile (its own server, on the cluster's PostgreSQL)."""
    if settings.services.profile == "cluster":
        from fjord.cluster import services_home

        return services_home(settings.home) / "mlflow"
    return settings.home / "mlflow"


def _healthy(uri: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def server_status(settings: Settings | None = None) -> dict[str, Any] | None:
    """The embedded server's record (pid, uri, log) if it is running and healthy, else ``None``."""
    state = _state_dir(settings or get_settings()) / "server.json"
    if not state.exists():
        return None
    record: dict[str, Any] = json.loads(state.read_text())
    return record if _healthy(record["uri"]) else None


def login(settings: Settings | None = None) -> dict[str, str]:
    """The embedded server's admin login (``username``, ``password``), made on first use, mode 600."""
    state_dir = _state_dir(settings or get_settings())
    path = state_dir / "credentials.json"
    with locked(state_dir / "credentials.lock"):
        if not path.exists():
            made = {"username": USERNAME, "password": secrets.token_urlsafe(24),
                    "flask_secret_key": secrets.token_urlsafe(32)}  # fmt: skip
            write_private(path, json.dumps(made))
        found: dict[str, str] = json.loads(path.read_text())
    return found


def _auth_config(state_dir: Path, credentials: dict[str, str]) -> Path:
    """MLflow's basic-auth config (mode 600): nobody but the admin may do anything, and the admin's
    password check (scrypt, about 150 ms) is cached for a minute rather than paid per request."""
    path = state_dir / "basic_auth.ini"
    write_private(
        path,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{state_dir / 'basic_auth.db'}\n"
        f"admin_username = {credentials['username']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n",
    )
    return path


def _use_login() -> None:
    """Have this process's MLflow clients (and its children's) log in to the embedded server."""
    os.environ.setdefault("MLFLOW_TRACKING_AUTH", AUTH_PROVIDER)


def _backend_store(settings: Settings, state_dir: Path) -> str:
    """SQLite in the server's directory; in the cluster profile, database ``mlflow`` on its PostgreSQL."""
    if settings.services.profile != "cluster":
        return f"sqlite:///{state_dir / 'mlflow.db'}"
    from sqlalchemy.engine import make_url

    from fjord.metadata import create_database

    url = settings.metadata.url
    if url is None:
        from fjord.cluster import resolve

        url = resolve(settings).metadata.url
    target = make_url(str(url)).set(database="mlflow").render_as_string(hide_password=False)
    create_database(target)
    return target


def start_server(settings: Settings | None = None) -> str:
    """Start the embedded MLflow server unless it already runs; its URI."""
    settings = settings or get_settings()
    state_dir = _state_dir(settings)
    with locked(state_dir / "server.lock"):  # one start, however many processes ask at once
        running = server_status(settings)
        if running and running.get("auth"):
            _use_login()
            return str(running["uri"])
        if running:  # started by a Fjord before logins: restart it behind one
            stop_server(settings)
        credentials = login(settings)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        artifacts = SharedFS(storage_root(settings)).sub("MLflow")
        artifacts.makedirs("")
        log = state_dir / "server.log"
        cmd = [
            sys.executable, "-m", "mlflow", "server",  # the backend store's URI: the environment below
            "--default-artifact-root", artifacts.uri(),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--app-name", "basic-auth",
        ]  # fmt: skip
        with log.open("ab") as out:
            env = {
                **os.environ,
                # No GenAI job runner (a second process and ~250 MB that experiments never use).
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # Not argv: in the cluster profile the URI holds PostgreSQL's password.
                "MLFLOW_BACKEND_STORE_URI": _backend_store(settings, state_dir),
                # The login: read by the server's own process only (its environment is private).
                "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(state_dir, credentials)),
                "MLFLOW_AUTH_ADMIN_PASSWORD": credentials["password"],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials["flask_secret_key"],
            }
            process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(uri):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise TrackingError(f"the embedded MLflow server did not start: {tail[0]} (log: {log})")
            time.sleep(0.5)
        record = {"pid": process.pid, "uri": uri, "log": str(log), "started": time.time(), "auth": True}
        (state_dir / "server.json").write_text(json.dumps(record))
        _use_login()
        return uri


def stop_server(settings: Settings | None = None) -> bool:
    """Stop the embedded server (its whole process group); ``False`` if none was running."""
    state = _state_dir(settings or get_settings()) / "server.json"
    if not state.exists():
        return False
    pid = json.loads(state.read_text())["pid"]
    state.unlink()
    # A server this process started stays a zombie until it is collected: asking the group with a
    # signal 0 saw it alive, and every stop waited its 10 s out.
    return stop_group(pid, signal.SIGTERM, timeout=10)


def tracking_uri(settings: Settings | None = None) -> str:
    """The tracking server to use: the configured one (checked) or the embedded one (started)."""
    settings = settings or get_settings()
    uri = settings.mlflow.tracking_uri
    _use_login()  # harmless for a server that is not this home's: the login goes to that one only
    if uri is None:
        return start_server(settings)
    if uri.startswith(("http://", "https://")) and not _healthy(uri, timeout=5):
        raise TrackingError(
            f"the MLflow tracking server at {uri} is unreachable",
            hint="start it, or unset mlflow.tracking_uri (FJORD_MLFLOW__TRACKING_URI) for the embedded one",
        )
    return uri


def client(uri: str) -> Any:
    """An ``MlflowClient`` for tracking and registry at ``uri``: quick to fail, quiet."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail in seconds, not minutes
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run is noise
    _use_login()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class Tracker:
    """What one experiment logs to MLflow: a parent run and a nested run per trial."""

    def __init__(self, uri: str, project: str, name: str, artifact_location: str) -> None:
        self.uri = uri
        self.client = client(uri)
        experiment_name = f"{project}/{name}"
        with _mlflow_errors(uri):
            found = self.client.get_experiment_by_name(experiment_name)
            self.experiment_id = (
                found.experiment_id
                if found
                else self.client.create_experiment(experiment_name, artifact_location=artifact_location)
            )
        self.parent_id: str | None = None

    def start(self, run_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        with _mlflow_errors(self.uri):
            run = self.client.create_run(
                self.experiment_id, run_name=run_id, tags={"fjord.run_id": run_id, **tags}
            )
            self.parent_id = run.info.run_id
            self._log(self.parent_id, params, {}, [])
        return self.parent_id

    def log_trial(self, result: Mapping[str, Any], progress: list[dict[str, Any]], files: Path | None) -> str:
        """A nested run for a finished trial; its MLflow run id."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        with _mlflow_errors(self.uri):
            run = self.client.create_run(
                self.experiment_id,
                run_name=result["trial"],
                tags={MLFLOW_PARENT_RUN_ID: self.parent_id or "", "fjord.trial": result["trial"]},
            )
            child = run.info.run_id
            self._log(child, result["params"], result.get("metrics") or {}, progress)
            if result.get("error"):
                self.client.set_tag(child, "fjord.error", result["error"][:5000])
            if files is not None and files.is_dir():
                self.client.log_artifacts(child, str(files))
            self.client.set_terminated(child, _STATUS[result["status"]])
        return child

    def finish(
        self, status: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
    ) -> None:
        if self.parent_id is None:
            return
        with _mlflow_errors(self.uri):
            self._log(self.parent_id, {}, metrics, [])
            for key, value in (tags or {}).items():
                self.client.set_tag(self.parent_id, key, value)
            self.client.set_terminated(self.parent_id, _STATUS.get(status, "FAILED"))

    def _log(
        self,
        run: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        progress: list[dict[str, Any]],
    ) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        points = [
            Metric(key, float(value), int(point["time"] * 1000), int(point["step"]))
            for point in progress
            for key, value in point.items()
            if key not in ("step", "time")
        ]
        points += [
            Metric(key, float(value), now, 0) for key, value in metrics.items() if key not in ("step", "time")
        ]
        for start in range(0, max(len(points), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(
                run,
                metrics=points[start : start + 1000],
                params=[Param(k, str(v)[:6000]) for k, v in params.items()] if start == 0 else [],
            )


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow at {uri}: {first[:300]}") from exc
