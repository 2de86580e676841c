"""Airflow 3's REST API, as the platform calls it: log in, unpause, trigger, follow, post asset events.

It speaks plain HTTP (no Airflow import), so the CLI and the monitor use it without loading Airflow::

    client = AirflowClient.connect()                    # airflow.api_url, else the embedded Airflow
    client.unpause("fraud_training_pipeline")
    run = client.trigger("fraud_training_pipeline", conf={"project": "fraud"})
    final = client.follow("fraud_training_pipeline", run["dag_run_id"], on_change=print)

The facts it is built on (measured here, ``../shared/STACK_NOTES.md``): a token comes from ``POST
/auth/token``; new DAGs are paused (``PATCH /api/v2/dags/{id}``); a trigger needs ``"logical_date":
null``; an asset is addressed by its integer id.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from fjord.config import Settings, get_settings
from fjord.errors import FjordError

FINISHED = {"success", "failed"}
TASK_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


def drift_asset(project: str, model: str) -> str:
    """The Airflow asset a monitor posts a model's drift alerts on (a retraining DAG is scheduled on
    it). The project is part of it: another project's model of the same name retrains nothing here."""
    return f"fjord://drift/{project}/{model}"


def performance_asset(project: str, model: str) -> str:
    """The Airflow asset the performance job posts a model's alerts on: its realized ROC AUC fell
    below its blessed one (``fraud_retrain`` is scheduled on it too)."""
    return f"fjord://performance/{project}/{model}"


def skew_asset(project: str, model: str) -> str:
    """The Airflow asset the skew job posts a model's alerts on: its served inputs differ from the
    features the ETL computed for the same rows (no DAG retrains on it: retraining on skewed inputs
    would bake the bug in; schedule a DAG of your own on it to be told)."""
    return f"fjord://skew/{project}/{model}"


class AirflowError(FjordError):
    """Airflow is unreachable, refuses a call, or a DAG cannot run."""

    exit_code = 14

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status  # the HTTP status Airflow answered, when it answered


class PipelineFailed(FjordError):
    """A DAG run ended ``failed``; the message names the task, the hint its log."""

    exit_code = 15


@dataclass(frozen=True)
class TaskState:
    """One task instance of a DAG run, as the follower reports it."""

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    duration_s: float | None
    queued_since: str | None

    @property
    def name(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"


class AirflowClient:
    """A logged-in session with one Airflow's REST API."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._username, self._password = username, password
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._token: str | None = None

    @classmethod
    def connect(cls, settings: Settings | None = None) -> AirflowClient:
        """The configured Airflow (``airflow.api_url``), else the embedded one, which must be running."""
        settings = settings or get_settings()
        airflow = settings.airflow
        if airflow.api_url:
            if not airflow.password:
                raise AirflowError("airflow.api_url is set but airflow.password is not")
            return cls(airflow.api_url, airflow.username, airflow.password)
        from fjord.airflow.stack import airflow_service

        service = airflow_service(settings)
        status = service.status()
        if status.address is None:
            state = status.partly or "not running"
            raise AirflowError(f"the embedded Airflow is {state}", hint="start the stack with `fjord up`")
        return cls(status.address, airflow.username, service.password())

    def close(self) -> None:
        self._http.close()

    # -- HTTP ------------------------------------------------------------------------------------

    def _login(self) -> str:
        try:
            answer = self._http.post(
                "/auth/token", json={"username": self._username, "password": self._password}
            )
        except httpx.HTTPError as exc:
            raise AirflowError(f"Airflow at {self.url} is unreachable: {exc}") from None
        if answer.status_code not in (200, 201):
            raise AirflowError(f"Airflow at {self.url} refused the login of {self._username!r}: "
                               f"{answer.status_code} {_detail(answer)}")  # fmt: skip
        return str(answer.json()["access_token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``/api/v2{path}`` logged in; the JSON answer. :class:`AirflowError` on any other status.

        A read that fails on the connection itself is tried once more on a new connection: the API
        server closes a kept-alive connection when a request's exception escapes it (apache/airflow
        #71360 does), and the next request on that socket is reset although the server is up."""
        retried = relogged = False
        while True:
            if self._token is None:
                self._token = self._login()
            try:
                answer = self._http.request(
                    method,
                    f"/api/v2{path}",
                    headers={**(headers or {}), "Authorization": f"Bearer {self._token}"},
                    **kwargs,
                )
            except httpx.TransportError as exc:
                if method == "GET" and not retried and not isinstance(exc, httpx.ConnectError):
                    retried = True
                    continue  # httpx drops the broken connection: the retry opens a new one
                raise AirflowError(f"Airflow at {self.url} is unreachable: {exc}") from None
            except httpx.HTTPError as exc:
                raise AirflowError(f"Airflow at {self.url} is unreachable: {exc}") from None
            if answer.status_code == 401 and not relogged:
                relogged, self._token = True, None  # expired: log in again once
                continue
            if answer.status_code not in ok:
                raise AirflowError(
                    f"{method} /api/v2{path}: {answer.status_code} {_detail(answer)}",
                    status=answer.status_code,
                )
            return answer.json() if answer.content else None

    # -- DAGs and runs ---------------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API shows it, or ``None`` while it is not (yet) serialized."""
        try:
            return dict(self.request("GET", f"/dags/{quote(dag_id)}"))
        except AirflowError as exc:
            if exc.status == 404:
                return None
            raise

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/importErrors", params={"limit": 100})["import_errors"])

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the dag-processor has serialized ``dag_id``: triggering it before fails."""
        deadline = time.monotonic() + timeout
        while True:
            dag = self.dag(dag_id)
            if dag is not None:
                return dag
            errors = [e for e in self.import_errors() if dag_id.split("_")[0] in e.get("filename", "")]
            if errors:
                first = errors[0]
                message = " ".join(str(first.get("stack_trace", "")).split())[-300:]
                raise AirflowError(f"DAG file {first.get('filename')} does not import: {message}")
            if time.monotonic() > deadline:
                raise AirflowError(
                    f"DAG {dag_id!r} is not known to Airflow after {timeout:.0f} s",
                    hint="is the dag-processor running (fjord status) and is dags_folder right?",
                )
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{quote(dag_id)}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Start a DAG run now (``logical_date: null``); the run as the API shows it."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return dict(self.request("POST", f"/dags/{quote(dag_id)}/dagRuns", json=body))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}"))

    def dag_runs(self, dag_id: str, limit: int = 20) -> list[dict[str, Any]]:
        answer = self.request(
            "GET", f"/dags/{quote(dag_id)}/dagRuns", params={"limit": limit, "order_by": "-run_after"}
        )
        return list(answer["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> list[TaskState]:
        answer = self.request(
            "GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances", params={"limit": 500}
        )
        return [
            TaskState(
                ti["task_id"], ti.get("map_index", -1), ti.get("state"), ti.get("try_number", 0),
                ti.get("duration"), ti.get("queued_when") if ti.get("state") == "queued" else None,
            )
            for ti in answer["task_instances"]
        ]  # fmt: skip

    def task_log(self, dag_id: str, run_id: str, task: TaskState) -> str:
        """The text of the task's last try's log."""
        answer = self.request(
            "GET",
            f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task.task_id)}"
            f"/logs/{max(task.try_number, 1)}",
            params={"map_index": task.map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        content = answer.get("content", [])
        if isinstance(content, str):
            return content
        lines = []
        for entry in content:
            event = entry.get("event", "") if isinstance(entry, dict) else str(entry)
            lines.append(str(event))
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task: TaskState) -> Any:
        """The task's return value (``None`` when it returned nothing)."""
        try:
            answer = self.request(
                "GET",
                f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task.task_id)}"
                "/xcomEntries/return_value",
                params={"map_index": task.map_index, "deserialize": True},
            )
        except AirflowError as exc:
            if exc.status == 404:
                return None
            raise
        return answer.get("value")

    def follow(
        self,
        dag_id: str,
        run_id: str,
        on_change: Callable[[TaskState], None] | None = None,
        *,
        poll_s: float = 2.0,
        timeout_s: float = 3600.0,
        stuck_queued_s: float = 180.0,
        task_timeout_s: float | None = None,
        until: Callable[[TaskState], bool] | None = None,
    ) -> str:
        """Poll the run until it ends, calling ``on_change`` for each task whose state changes; the
        run's final state. With ``until``, return as soon as a task satisfies it: that task's state.

        A hang fails fast, naming the task and its log: a task queued longer than ``stuck_queued_s`` is
        the classic misconfiguration (the worker cannot reach the execution API), :class:`AirflowError`;
        a task running longer than ``task_timeout_s`` is stuck: the run is marked failed (Airflow stops
        its tasks) and :class:`PipelineFailed` is raised. A run not done in ``timeout_s`` raises
        :class:`AirflowError` naming the tasks still running."""
        seen: dict[str, str | None] = {}
        since: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            # what ended before what started, so the terminal reads in the order things happened
            states = sorted(self.task_states(dag_id, run_id), key=lambda t: t.state not in TASK_DONE)
            now = time.monotonic()
            for task in states:
                if seen.get(task.name) != task.state:
                    seen[task.name] = task.state
                    if on_change:
                        on_change(task)
                    if until is not None and until(task):
                        return str(task.state)
                for state in ("queued", "running"):
                    if task.state != state:
                        since.pop((task.name, state), None)
                waited = now - since.setdefault((task.name, str(task.state)), now)
                if task.state == "queued" and waited > stuck_queued_s:
                    raise AirflowError(
                        f"task {task.name} of {dag_id} has been queued for {stuck_queued_s:.0f} s",
                        hint="the workers cannot reach the execution API or sign with another JWT "
                        "secret: run `fjord status` and `fjord logs airflow`",
                    )
                if task.state == "running" and task_timeout_s is not None and waited > task_timeout_s:
                    self.request(
                        "PATCH", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}", json={"state": "failed"}
                    )
                    raise PipelineFailed(
                        f"task {task.name} of {dag_id} is stuck: running for {waited:.0f} s, past its "
                        f"{task_timeout_s:.0f} s (airflow.task_timeout_seconds); run {run_id} marked failed",
                        hint=f"its log: {self.task_url(dag_id, run_id, task)}",
                    )
            state = str(self.dag_run(dag_id, run_id)["state"])
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                running = [t for t in states if t.state == "running"]
                raise AirflowError(
                    f"DAG run {run_id} of {dag_id} did not finish in {timeout_s:.0f} s; running: "
                    + (", ".join(t.name for t in running) or "nothing"),
                    hint="; ".join(f"{t.name}'s log: {self.task_url(dag_id, run_id, t)}" for t in running)
                    or None,
                )
            time.sleep(poll_s)

    def task_url(self, dag_id: str, run_id: str, task: TaskState) -> str:
        """The task instance's page in the Airflow UI (its log is there)."""
        url = f"{self.url}/dags/{quote(dag_id)}/runs/{quote(run_id)}/tasks/{quote(task.task_id)}"
        return url if task.map_index < 0 else f"{url}/mapped/{task.map_index}"

    # -- assets ----------------------------------------------------------------------------------

    def asset_id(self, uri: str) -> int:
        """The integer id of the asset at ``uri`` (a DAG scheduled on it must exist)."""
        answer = self.request("GET", "/assets", params={"uri_pattern": uri, "limit": 100})
        for asset in answer["assets"]:
            if asset["uri"] == uri:
                return int(asset["id"])
        raise AirflowError(f"Airflow knows no asset {uri!r}", hint="no DAG is scheduled on it yet")

    def post_asset_event(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Record an event on the asset (``extra`` travels to the runs it triggers)."""
        body = {"asset_id": self.asset_id(uri), "extra": extra}
        return dict(self.request("POST", "/assets/events", json=body))

    def asset_events(
        self, uri: str, limit: int = 100, *, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """The asset's events, newest first, each with the DAG runs it created (``created_dagruns``):
        the latest ``limit``, or, with ``since``, every event from then on (page by page)."""
        params: dict[str, Any] = {"asset_id": self.asset_id(uri), "limit": limit, "order_by": "-timestamp"}
        if since is None:
            return list(self.request("GET", "/assets/events", params=params)["asset_events"])
        aware = since if since.tzinfo else since.replace(tzinfo=UTC)  # naive times are UTC here
        params["timestamp_gte"] = aware.astimezone(UTC).isoformat()
        events: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", "/assets/events", params={**params, "offset": len(events)})
            events += page["asset_events"]
            if len(page["asset_events"]) < limit:
                return events


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        detail = answer.text
    return " ".join(str(detail).split())[:300]


# -- the run ids of DAG runs and their tasks in Fjord's lineage (no Airflow needed to name them) ------


def task_run_id(stage: str, dag_id: str, dag_run_id: str, task_id: str, map_index: int = -1) -> str:
    """The stable run id of one task of one DAG run (the same on every try and every clear)."""
    digest = hashlib.sha1(f"{dag_id}/{dag_run_id}/{task_id}/{map_index}".encode()).hexdigest()[:16]
    return f"{stage}-af-{digest}"


def dag_run_record_id(dag_id: str, dag_run_id: str) -> str:
    """The id every task's run record names as its parent: the DAG run as one node of the run tree."""
    digest = hashlib.sha1(f"{dag_id}/{dag_run_id}".encode()).hexdigest()[:16]
    return f"dagrun-{digest}"
