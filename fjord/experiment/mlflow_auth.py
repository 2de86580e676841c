"""The embedded MLflow server's login, as MLflow's clients send it.

The embedded server runs MLflow's basic-auth app: with no login a request is a 401, so another user
of the machine cannot read runs or move the registry's aliases (which the deploy gate trusts). Its
admin login is generated per home and kept mode 600 in ``$FJORD_HOME/mlflow/credentials.json``.

Fjord's processes log in through MLflow's request-auth plugin interface: ``MLFLOW_TRACKING_AUTH=fjord``
names the provider below (registered in ``pyproject.toml``), which adds the login to a request only
when it goes to this home's embedded server. So the password is in no URI, command line or
environment, and a process that also talks to another MLflow (``mlflow.tracking_uri``, with MLflow's
own ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) sends each server its own login.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests.auth
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from fjord.experiment.tracking import AUTH_PROVIDER


def _embedded_server(state_dir: Path) -> tuple[str, dict[str, str]] | None:
    """The embedded server's URI and login, if this home has one running."""
    try:
        uri = json.loads((state_dir / "server.json").read_text())["uri"]
        login = json.loads((state_dir / "credentials.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    return str(uri), login


class _EmbeddedServerLogin(requests.auth.AuthBase):
    """Basic auth with the embedded server's login, on requests to that server only."""

    def __call__(self, request: Any) -> Any:
        from fjord.config import get_settings
        from fjord.experiment.tracking import mlflow_home

        found = _embedded_server(mlflow_home(get_settings()))
        if found:
            uri, login = found
            if str(request.url).startswith(f"{uri}/"):
                basic = requests.auth.HTTPBasicAuth(login["username"], login["password"])
                return basic(request)
        return request


class FjordRequestAuthProvider(RequestAuthProvider):
    """``MLFLOW_TRACKING_AUTH=fjord``: log in to this home's embedded MLflow server."""

    def get_name(self) -> str:
        return AUTH_PROVIDER

    def get_auth(self) -> Any:
        return _EmbeddedServerLogin()
