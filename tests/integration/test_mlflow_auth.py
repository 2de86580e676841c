"""The embedded MLflow server's login: a real server behind MLflow's basic-auth app refuses anyone
without the home's login, Fjord's clients send it, and it goes nowhere else (no other server, no
command line, no log)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from mlflow.exceptions import MlflowException

from fjord.experiment.tracking import client, login

pytestmark = pytest.mark.slow


def _status(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_embedded_server_refuses_anyone_without_the_homes_login(mlflow_server: str) -> None:
    home = _home_of(mlflow_server)
    credentials = json.loads((home / "mlflow" / "credentials.json").read_text())
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(search) == 401
    assert _status(search, credentials["username"], "not-the-password") == 401
    assert _status(search, "admin", "password1234") == 401  # MLflow's documented example login
    assert _status(search, credentials["username"], credentials["password"]) == 200
    assert _status(f"{mlflow_server}/health") == 200  # what `fjord status` polls stays open

    # The login is the home's own, kept owner-only, and in no process's command line or the log.
    for name in ("credentials.json", "basic_auth.ini"):
        assert stat.S_IMODE((home / "mlflow" / name).stat().st_mode) == 0o600, name
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert credentials["password"] not in processes
    assert credentials["password"] not in (home / "mlflow" / "server.log").read_text(errors="replace")


def test_fjords_client_logs_in_and_sends_the_login_to_no_other_server(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A test's own home, with the session's server as its embedded one: what every Fjord process does.
    home = _home_of(mlflow_server)
    monkeypatch.setenv("FJORD_HOME", str(home))
    monkeypatch.delenv("FJORD_MLFLOW__TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    from fjord.config import reset_settings
    from fjord.experiment.tracking import tracking_uri

    reset_settings()
    assert tracking_uri() == mlflow_server
    mlflow = client(mlflow_server)
    name = f"auth-{os.getpid()}"
    mlflow.create_registered_model(name)
    assert mlflow.get_registered_model(name).name == name

    # Another MLflow (any server the user configures) never sees this home's login.
    with _recording_server() as (other, seen), pytest.raises(MlflowException, match="RESOURCE_DOES_NOT"):
        client(other).get_registered_model(name)
    password = login()["password"]
    assert seen, "the client sent nothing to the other server"
    assert all(password not in _decoded(header) for header in seen)


def test_a_test_home_points_at_a_configured_server_with_mlflows_own_variables(tracking: str) -> None:
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "fjord"
    experiments = client(tracking).search_experiments(max_results=1)
    assert isinstance(experiments, list)


def _home_of(uri: str) -> Path:
    """The home whose embedded server runs at ``uri`` (the session's server is one of the test's)."""
    from tests.conftest import mlflow_home

    home = mlflow_home(uri)
    assert json.loads((home / "mlflow" / "server.json").read_text())["uri"] == uri
    return home


def _decoded(header: str) -> str:
    kind, _, value = header.partition(" ")
    return base64.b64decode(value).decode(errors="replace") if kind == "Basic" else header


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _recording_server() -> Iterator[tuple[str, list[str]]]:
    """A plain HTTP server on loopback that records each request's Authorization header."""
    handler = type("Recorder", (_Recorder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
