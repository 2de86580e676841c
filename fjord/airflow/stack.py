"""The embedded Airflow 3: api-server, scheduler, dag-processor and triggerer, on loopback.

Each runs as its own process (``airflow standalone`` leaves children behind on SIGTERM), started in
that order, each healthy before the next: the api-server answers ``/api/v2/monitor/health``, and the
others show a recent heartbeat there. All four get their configuration from one place,
:meth:`AirflowService.environment`, so the two failure modes users hit most cannot happen here:

- tasks stuck in *queued* because a worker calls the execution API at a different URL
  (``[core] execution_api_server_url`` defaults to localhost:8080), or
- tasks rejected because the api-server and the scheduler sign their JWTs with different secrets
  (``[api_auth] jwt_secret`` is generated per process unless set).

The secrets are made once per Fjord home and kept in ``secrets.json`` (mode 600); the ``admin``
user's password is in ``simple_auth_manager_passwords.json``. The metadata database is SQLite
under ``$FJORD_HOME/services/airflow/`` with the LocalExecutor, or a ``airflow`` database beside
Fjord's own when ``metadata.url`` is PostgreSQL. Parallelism is ``airflow.parallelism`` (4: two
cores, and each Spark task is a JVM).

A fifth process, the warm job worker (``fjord/jobworker.py``, ``airflow.job_worker``), runs the
tasks' stage jobs: the tasks' hook hands each job to it over a Unix socket in this directory.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import psutil

from fjord.config import Settings, get_settings
from fjord.errors import ServiceError
from fjord.metadata import create_database
from fjord.private import write_private
from fjord.services import process
from fjord.services.base import Process, Service
from fjord.services.process import log_tail, run_once

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
USER = "admin"
# A component is healthy while its heartbeat is younger than this (Airflow's own checks use 30-60 s).
HEARTBEAT_S = 60
COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
LABELS = ("api-server", "scheduler", "dag-processor", "triggerer")
JOB_WORKER = "job-worker"  # the fifth process's label (fjord/jobworker.py)
CELERY_WORKERS = 2  # the cluster profile's Celery workers
TASK_HEARTBEAT_TIMEOUT_S = 60  # a task without a heartbeat this long is failed (and retried)


def _describe(proc: psutil.Process) -> str:
    """``pid N: command`` (a task's process title names its task instance's id)."""
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:100]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def _parent(proc: psutil.Process) -> int | None:
    """``proc``'s parent pid; ``None`` once it has exited (a task ends whenever it ends)."""
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def _airflow() -> str:
    """The ``airflow`` console script of this environment."""
    return str(Path(sys.executable).with_name("airflow"))


class AirflowService(Service):
    """Airflow 3 as four processes sharing one configuration, and the job worker (module docstring)."""

    name = "airflow"
    ports: ClassVar[dict[str, int]] = {"api": 8080}
    start_timeout_s = 180.0

    def __init__(self, home: Path, *, preferred_ports: bool = True, settings: Settings | None = None) -> None:
        super().__init__(home, preferred_ports=preferred_ports)
        self.settings = settings or get_settings()
        # The cluster profile: CeleryExecutor, its broker the cluster's Valkey, CELERY_WORKERS workers
        # (each takes half of airflow.parallelism).
        self.celery = self.settings.services.profile == "cluster"
        self._log_offsets: dict[str, int] = {}
        self.stopped_tasks: list[str] = []  # the tasks the last stop() found in flight, "pid N: command"

    def stop(self) -> bool:
        """Stop the four processes, then the tasks they were running, with their Spark JVMs.

        A task runs in a process group of its own (and its ``spark-submit`` JVM, when the job worker did
        not take its job, in that task's group), so stopping the four alone left it running, able to
        publish, for minutes after ``fjord down``. The job worker is stopped with its group: its JVM
        and the job it was running.
        The tasks are stopped, not waited for: a task's job is idempotent under its run id, and the
        next ``fjord up`` finds it dead and retries it.
        """
        # Not the job worker's: its JVM is in its group, and a server one of its jobs started (a model
        # server, a monitor) runs in a session of its own, no part of Airflow, stopped on its own.
        strays = process.stray_descendants([pid for label, pid in self.pids().items() if label != JOB_WORKER])
        # Named before anything stops (the scheduler, stopping, may end some itself): a task runs under
        # LocalExecutor's "airflow worker -- <task instance id>"; other strays (a DAG file's parser)
        # are stopped too, but are no task.
        pids = {s.pid for s in strays}
        roots = [p for p in strays if _parent(p) not in pids]  # one gone meanwhile has no parent
        self.stopped_tasks = [text for text in map(_describe, roots) if ": airflow worker" in text]
        stopped = super().stop()
        process.stop_processes(strays)  # whatever the scheduler left running, JVMs included
        return stopped

    # -- configuration ---------------------------------------------------------------------------

    def address_for(self, ports: dict[str, int]) -> str:
        return f"http://127.0.0.1:{ports['api']}"

    def environment(self, ports: dict[str, int]) -> dict[str, str]:
        """The configuration every Airflow process of this home runs with (and ``airflow`` CLI calls)."""
        keys = self._secrets()
        base = self.address_for(ports)
        parallelism = self.settings.airflow.parallelism
        return {
            "AIRFLOW_HOME": str(self.dir),
            "FJORD_HOME": str(self.settings.home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.settings.airflow.dags_folder or DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            **(self._celery_environment() if self.celery else {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}),
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": keys["api_secret"],
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url(),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.database_url(asynchronous=True),
            # New DAG files show up within 30 s, not 5 minutes; one parser process on two cores.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # A scheduler that died leaves its running tasks orphaned; the restarted one resets them
            # (and their run goes on) at its next check. Airflow checks every 5 minutes; a dead
            # scheduler is known as one after scheduler_health_check_threshold (30 s).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        }

    def _celery_environment(self) -> dict[str, str]:
        """The CeleryExecutor's: the broker is the cluster's Valkey (its database 1; the online store
        has 0), the results go to Airflow's own database."""
        from sqlalchemy.engine import make_url

        from fjord.services import redis_url

        broker = make_url(redis_url(self.settings)).set(database="1").render_as_string(hide_password=False)
        slots = self.settings.airflow.parallelism
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url(),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(max(1, slots // CELERY_WORKERS)),
            # A worker (its host) that dies leaves its tasks "running" without heartbeats; the scheduler
            # fails them, and they retry on another worker, after this long (Airflow's default: 300 s).
            # Tasks heartbeat every 5 s ([workers] min_heartbeat_interval).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_S),
        }

    def database_url(self, *, asynchronous: bool = False) -> str:
        """SQLite in this directory, or database ``airflow`` on the server ``metadata.url`` names.

        ``asynchronous``: the URL of the API server's async engine. Through psycopg 3 (the driver the
        platform already has) rather than asyncpg, which Airflow would otherwise assume."""
        url = self.settings.metadata.url
        if url and url.startswith("postgresql"):
            from sqlalchemy.engine import make_url

            target = make_url(url).set(database="airflow")
            if asynchronous:
                target = target.set(drivername="postgresql+psycopg_async")
            return target.render_as_string(hide_password=False)
        return f"sqlite{'+aiosqlite' if asynchronous else ''}:///{self.dir / 'airflow.db'}"

    @property
    def job_worker_socket(self) -> Path:
        """Where the job worker listens (mode 600: this home's owner only)."""
        return self.dir / "job-worker.sock"

    @property
    def passwords_file(self) -> Path:
        return self.dir / "simple_auth_manager_passwords.json"

    def password(self) -> str:
        """The ``admin`` user's password (made on the first start)."""
        return str(json.loads(self.passwords_file.read_text())[USER])

    def _secrets(self) -> dict[str, str]:
        path = self.dir / "secrets.json"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            values = {
                "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "jwt_secret": secrets.token_urlsafe(32),
                "api_secret": secrets.token_urlsafe(32),
            }
            write_private(path, json.dumps(values))
        return dict(json.loads(path.read_text()))

    def prepare(self, ports: dict[str, int]) -> None:
        if not self.passwords_file.exists():
            write_private(self.passwords_file, json.dumps({USER: secrets.token_urlsafe(12)}) + "\n")
        if self.database_url().startswith("postgresql"):
            create_database(self.database_url())
        marker = self.dir / "migrated"
        if marker.exists() and marker.read_text() == _airflow_version():
            return
        run_once(
            [_airflow(), "db", "migrate"],
            "migrating Airflow's metadata database",
            env=self.environment(ports),
        )
        marker.write_text(_airflow_version())

    def processes(self, ports: dict[str, int]) -> list[Process]:
        env = self.environment(ports)
        commands = {  # LABELS, in start order
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(ports["api"])],
            # No log servers: Airflow binds them to every interface (serve_logs has no host setting),
            # and on one machine the api-server reads the task logs from their files.
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        if self.celery:  # each worker on the broker's default queue; no log server (as above)
            for i in range(1, CELERY_WORKERS + 1):
                commands[f"celery-worker{i}"] = [
                    "celery", "worker", "--celery-hostname", f"worker{i}@%h", "--skip-serve-logs",
                    "--without-gossip", "--without-mingle",
                ]  # fmt: skip
        processes = [Process(label, [_airflow(), *argv], env) for label, argv in commands.items()]
        for label in commands:  # a worker is ready once it says so in its log, after this start
            self._log_offsets[label] = self.log(label).stat().st_size if self.log(label).exists() else 0
        # The job worker keeps a SparkSession: on a cluster it would hold the workers' cores between
        # jobs. There each task's job is a spark-submit of its own, as on any cluster.
        if self.settings.airflow.job_worker.enabled and not self.celery:
            worker = [sys.executable, "-m", "fjord.jobworker", "--socket", str(self.job_worker_socket)]
            processes.append(Process(JOB_WORKER, worker, {**env, "PYTHONUNBUFFERED": "1"}))
        return processes

    def start(self) -> str:
        """Start the processes (the api-server first, then the other three at once); the API's URL once
        every component reports a heartbeat."""
        address = super().start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return address

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        # The scheduler, dag-processor and triggerer need only the database and start side by side:
        # wait_healthy() then waits for all three heartbeats at once. The job worker is ready once
        # it listens: a task arriving while it warms up waits in its backlog.
        if label == JOB_WORKER:
            return self.job_worker_socket.exists()
        if label.startswith("celery-worker"):
            with self.log(label).open("rb") as log:
                log.seek(self._log_offsets.get(label, 0))
                return b" ready." in log.read()
        return label != "api-server" or self.health(ports) is not None

    def wait_healthy(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until every component reports a recent heartbeat; the health document.

        :class:`ServiceError` with the log's tail when a process exits or the time runs out.
        """
        deadline = time.monotonic() + (timeout or self.start_timeout_s)
        while True:
            health = self.health() or {}
            late = [part for part in COMPONENTS if not _healthy(health, part)]
            if not late:
                return health
            pids = self.status().pids
            dead = [label for label in LABELS if label not in pids]
            if dead:
                label = dead[0]
                raise ServiceError(
                    f"airflow {label} is not running: {log_tail(self.log(label), 2)} (log: {self.log(label)})"
                )
            if time.monotonic() > deadline:
                label = "api-server" if late[0] == "metadatabase" else late[0].replace("_", "-")
                raise ServiceError(
                    f"airflow {label} sent no heartbeat: {log_tail(self.log(label))} (log: {self.log(label)})"
                )
            time.sleep(0.5)

    def health(self, ports: dict[str, int] | None = None) -> dict[str, Any] | None:
        """``/api/v2/monitor/health`` (no login needed), or ``None`` when the api-server is down."""
        import httpx

        ports = ports or self._state_ports()
        if not ports:
            return None
        try:
            answer = httpx.get(f"{self.address_for(ports)}/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return dict(answer.json()) if answer.status_code == 200 else None

    def _state_ports(self) -> dict[str, int]:
        from fjord.services.process import read_state

        return dict(read_state(self._state_file).get("ports") or {})


def _healthy(health: dict[str, Any], part: str) -> bool:
    info = health.get(part) or {}
    if part == "metadatabase":
        return info.get("status") == "healthy"
    return info.get("status") == "healthy" and _age_s(info.get(f"latest_{part}_heartbeat")) < HEARTBEAT_S


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    from datetime import UTC, datetime

    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def airflow_service(settings: Settings | None = None) -> AirflowService:
    """The embedded Airflow of this Fjord home and profile (not started)."""
    from fjord.cluster import services_home

    settings = settings or get_settings()
    home = services_home(settings.home) if settings.services.profile == "cluster" else settings.home
    return AirflowService(home, preferred_ports=settings.services.preferred_ports, settings=settings)
