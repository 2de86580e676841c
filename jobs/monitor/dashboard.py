"""The monitor's dashboard: one loopback page for every monitored model of this Fjord home.

    python -m jobs.monitor.dashboard --port 8050        (or: fjord monitor dashboard)

The page (``static/index.html``) polls ``/api/data`` every two seconds and draws, per window:
throughput, latency percentiles, error rate, the positive rate and the score distribution, and each
feature's drift score with its threshold; the ROC AUC estimated without labels (CBPE) per window, and
per day the realized ROC AUC once labels land beside the estimate, against the blessed AUC; the
training/serving skew per feature; the alerts (drift, performance, skew; a drift alert of a skewed
window marked suspect) link to the retraining runs in the Airflow UI.
Everything it reads comes from the monitor's results tables (:mod:`jobs.monitor.store`), so it shows
the same numbers as ``fjord monitor status``. The chart library (uPlot) is vendored under
``static/vendor``: nothing is fetched from elsewhere.

Loopback is shared by every user of the machine, so the dashboard asks for the home's token, as
Jupyter does: the link ``fjord up`` (or ``fjord monitor dashboard``) prints carries it once
(``?token=...``); the dashboard then sets an HttpOnly, SameSite=Strict cookie and drops the token from
the address. Scripts send ``Authorization: Bearer <token>``. Anything else is a 401.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import socket
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from fjord.config import get_settings
from fjord.errors import FjordError
from fjord.projects import list_projects
from jobs.monitor import service
from jobs.monitor.store import MONITORING

STATIC = Path(__file__).parent / "static"
WINDOWS_SHOWN = 360
log = logging.getLogger("fjord.monitor.dashboard")


def monitored() -> list[dict[str, Any]]:
    """Every (project, model) with monitor results or a running monitor."""
    running = {(r["project"], r["model"]): r for r in service.running()}
    found = set(running)
    for project in list_projects():
        if project.fs.exists(MONITORING):
            found |= {(project.name, model) for model in project.fs.listdir(MONITORING)}
    return [
        {"project": p, "model": m, "running": (p, m) in running,
         "spec": running[(p, m)]["spec"] if (p, m) in running else None}
        for p, m in sorted(found)
    ]  # fmt: skip


def _airflow_url() -> str | None:
    settings = get_settings()
    if settings.airflow.api_url:
        return settings.airflow.api_url
    from fjord.airflow.stack import airflow_service

    return airflow_service(settings).address()


def _serving(project: str, model: str) -> dict[str, Any] | None:
    from jobs.serve import serving

    try:
        found = serving.get_serving(model, project=project)
    except FjordError:
        return None
    return {"labels": found.labels, "topic": found.topic}


def _side_by_side(
    windows: list[dict[str, Any]],
    performance: list[dict[str, Any]],
    model: str,
    served: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Each version in the windows shown (the stable one, a canary, a shadow), with its labels and its
    figures over those windows: a shadow's beside the champion's it scored the calls of."""
    from jobs.monitor.store import version_summary

    labels = (served or {}).get("labels", {})
    versions = sorted({w["version"] for w in windows if w["model"] == model} | set(labels.values()))
    side = []
    for version in versions:
        roles = sorted(label for label, v in labels.items() if v == version)
        side.append({**version_summary(windows, performance, model, version), "labels": roles})
    return side


def data(project: str, model: str) -> dict[str, Any]:
    """What the page draws for one monitored model."""
    from jobs.monitor.job import MonitorSpec

    store = service.results_of(project, model)  # names checked, and a typo is not found
    windows = store.windows()[-WINDOWS_SHOWN:]
    suspect = {m["alert_id"]: m["skew_alert_id"] for m in store.suspects()}
    alerts = sorted(
        (a for part in ("alerts", "performance_alerts", "skew_alerts") for a in store.alerts_of(part)),
        key=lambda a: a["created_at"],
    )
    for a in alerts:
        a["suspect_of_skew"] = suspect.get(a["alert_id"])
    record = service.state(project, model)
    spec = record["spec"] if record else MonitorSpec(project=project, model_name=model).model_dump()
    served = _serving(project, model)
    performance = store.performance()[-WINDOWS_SHOWN:]
    return {
        "project": project,
        "model": model,
        "running": record is not None and (service.health(project, model) or {}).get("state") != "down",
        "state": service.describe(project, model),
        "spec": spec,
        "windows": windows,
        "alerts": alerts,
        "performance": performance,
        "versions": _side_by_side(windows, performance, model, served),
        "skew": store.skew(),
        "dead_letters": store.dead_letter_count(),
        "serving": served,
        "airflow_url": _airflow_url(),
        "generated_at": time.time(),
    }


async def index(_request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html")


async def api_monitors(_request: Request) -> JSONResponse:
    return JSONResponse(monitored())


async def api_data(request: Request) -> JSONResponse:
    project, model = request.query_params.get("project"), request.query_params.get("model")
    if not project or not model:
        return JSONResponse({"error": "project and model are required"}, status_code=400)
    try:
        payload = data(project, model)
    except FjordError as exc:
        return JSONResponse({"error": exc.one_line()}, status_code=404)
    return JSONResponse(_jsonable(payload))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is no JSON
        return None
    return value


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(errors="replace"), token.encode())


class TokenGate:
    """Only requests that carry the dashboard's token get through (see the module's docstring)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookie = f"fjord_dashboard_{request.url.port or 80}"  # cookies are per host, not per port
        given = request.query_params.get("token")
        if given is not None and _same(given, self.token):
            # Once, from the printed link: keep it in a cookie and out of the address bar and history.
            response: Any = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
            response.set_cookie(cookie, self.token, httponly=True, samesite="strict")
        elif _same(request.cookies.get(cookie, ""), self.token) or _same(
            request.headers.get("authorization", ""), f"Bearer {self.token}"
        ):
            await self.app(scope, receive, send)
            return
        else:
            response = JSONResponse(
                {"error": "the dashboard needs its token: open the link `fjord monitor dashboard` prints"},
                status_code=401,
            )
        await response(scope, receive, send)


def app(token: str | None = None) -> ASGIApp:
    """The dashboard, behind this home's token (or ``token``)."""
    routes = Starlette(
        routes=[
            Route("/", index),
            Route("/api/monitors", api_monitors),
            Route("/api/data", api_data),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return TokenGate(routes, token or service.dashboard_token())


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Fjord's monitoring dashboard")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--host", default="127.0.0.1", help="loopback by default")
    args = parser.parse_args(argv)
    # Bound here, then said: the starter waits for this line, not merely for the port to answer (another
    # dashboard may have taken the same free port a moment earlier; this one then exits here).
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise SystemExit(f"error: cannot bind {args.host}:{args.port}: {exc.strerror}") from None
    print(f"dashboard on http://{args.host}:{args.port}", flush=True)
    uvicorn.Server(uvicorn.Config(app(), log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
