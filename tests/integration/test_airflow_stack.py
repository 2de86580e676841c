"""The embedded Airflow on the embedded PostgreSQL: four processes that agree and the job worker, a
protected REST API, the DAGs parsed by a real dag-processor, a second start that finds it running, and
a stop, with a task and its Spark JVM (in the job worker) in flight, that leaves no process behind."""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from fjord.airflow.client import AirflowClient
from fjord.airflow.stack import airflow_service
from fjord.config import reset_settings
from fjord.projects import create_project
from fjord.services.process import stray_descendants
from jobs.etl.demo_data import DemoSpec, generate

pytestmark = pytest.mark.slow

DAGS = {"fraud_training_pipeline", "fraud_retrain", "fraud_batch_inference", "featurestore_maintenance"}


def _tree(pids: dict[str, int]) -> set[int]:
    found: set[int] = set()
    for pid in pids.values():
        root = psutil.Process(pid)
        found |= {root.pid, *(c.pid for c in root.children(recursive=True))}
    return found


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """The (address, port) pairs the processes ``pids`` listen on. A child that ended in between
    (Airflow starts short-lived ones, as a DAG file's parse) listens on nothing: it is skipped."""
    found = set()
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, or a process gone between two looks, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_jvm(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "java"
    except psutil.Error:
        return False


def _is_task(proc: psutil.Process) -> bool:
    """Whether ``proc`` is a task's process (LocalExecutor's ``airflow worker -- <task instance>``)."""
    try:
        return "airflow worker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _wait_for(found, timeout: float = 240.0):
    """Poll ``found()`` until it returns something truthy (a task shows up within seconds)."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, "no task started in time"
        time.sleep(0.5)
    return result


def test_airflow_on_postgresql_starts_once_serves_the_dags_and_stops_clean(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FJORD_METADATA__URL", postgres_server)
    monkeypatch.setenv("FJORD_SERVICES__PREFERRED_PORTS", "false")
    reset_settings()
    service = airflow_service()
    env = service.environment(service._choose_ports({}))
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg_async://")
    url = service.start()
    try:
        pids = service.pids()
        assert set(pids) == {"api-server", "scheduler", "dag-processor", "triggerer", "job-worker"}
        processes = _tree(pids)
        listening = _listening(processes)
        assert {ip for ip, _port in listening} == {"127.0.0.1"}, listening  # no log server on 0.0.0.0
        assert service.start() == url and service.pids() == pids  # found running: nothing started
        assert httpx.get(f"{url}/api/v2/dags", timeout=10).status_code == 401  # no token, no answer
        client = AirflowClient.connect()
        for dag_id in sorted(DAGS):
            assert client.wait_for_dag(dag_id, timeout=180)["dag_id"] == dag_id
        assert client.import_errors() == []
        engine = create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        with engine.connect() as conn:  # Airflow's metadata is in PostgreSQL, not a SQLite file
            stored = {row[0] for row in conn.execute(text("SELECT dag_id FROM dag"))}
        engine.dispose()
        assert stored >= DAGS
        assert not (service.dir / "airflow.db").exists()
        # A task in flight: the task's process, and the ETL's JVM in the job worker.
        generate(create_project("fraud").fs, DemoSpec(rows=500, days=1))
        client.unpause("fraud_training_pipeline")
        client.trigger("fraud_training_pipeline", {"batches": ["2026-11-01"]})
        worker = psutil.Process(pids["job-worker"])

        def etl_in_flight() -> list[psutil.Process]:
            tasks = [p for p in stray_descendants(list(pids.values())) if _is_task(p)]
            jvms = [p for p in worker.children(recursive=True) if _is_jvm(p)]
            return tasks + jvms if tasks and jvms else []

        processes |= {p.pid for p in _wait_for(etl_in_flight)}
        processes |= {p.pid for p in stray_descendants(list(pids.values()))}
    finally:
        assert service.stop()
    assert len(service.stopped_tasks) == 1 and "airflow worker" in service.stopped_tasks[0]
    assert [p for p in processes if _alive(p)] == []
    assert service.address() is None
