"""The warm job worker (fjord/jobworker.py) on real jobs: Airflow's hook runs a task's stage job in
it, with the result, output and exit codes a job process of its own gives; it takes only its owner's
stage jobs under its own settings; and a task killed mid-job takes its job along: nothing published,
the worker started afresh (same pid, a new JVM), the retry publishing once."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from airflow.sdk.exceptions import AirflowFailException

import featurestore
from fjord.airflow.hook import FjordJobHook
from fjord.airflow.stack import airflow_service
from fjord.config import get_settings
from fjord.jobworker import JobWorkerClient, settings_digest
from fjord.lineage import get_run
from fjord.projects import create_project
from fjord.services.process import wait_until
from jobs.etl.demo_data import DemoSpec, generate

pytestmark = pytest.mark.slow
GROUPS = ("transactions_features", "fraud_labels", "profile_features", "card_features")


@pytest.fixture
def worker(fjord_home: Path) -> Iterator[psutil.Process]:
    """The job worker of this test's home, as ``fjord up`` starts it (its own session), stopped after."""
    socket = airflow_service().job_worker_socket
    socket.parent.mkdir(parents=True, exist_ok=True)
    log = open(socket.with_name("job-worker.log"), "w")  # noqa: SIM115 (closed at the end)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fjord.jobworker", "--socket", str(socket)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    wait_until(socket.exists, what="the job worker", pid=proc.pid, log=Path(log.name), timeout=60)
    yield psutil.Process(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()


def _client(wait_s: float = 180) -> JobWorkerClient:
    return JobWorkerClient(airflow_service().job_worker_socket, wait_s=wait_s)


def _request(module: str, *argv: str, **more: object) -> dict:
    return {"module": module, "argv": list(argv), "env": {}, "settings": settings_digest(get_settings()),
            "run_id": "test", **more}  # fmt: skip


def _commits() -> dict[str, list[int]]:
    store = featurestore.connect("fraud")
    found = {g.name: sorted(g.commit_details()) for g in store.get_feature_groups()}
    return {g: found.get(g, []) for g in GROUPS}


def test_tasks_run_their_jobs_in_the_warm_worker_and_it_takes_only_its_owners_stage_jobs(
    worker: psutil.Process, capfd: pytest.CaptureFixture[str]
) -> None:
    project = create_project("fraud")
    first_day, second_day = generate(project.fs, DemoSpec(rows=2_000, days=2, seed=3))
    hook = FjordJobHook()
    log = ""

    def task_log() -> str:  # what the hook logged so far (a task's log)
        nonlocal log
        log += "".join(capfd.readouterr())
        return log

    def etl(batch: str, run_id: str) -> dict:
        return hook.run("etl", {"project": "fraud", "batch": batch}, run_id=run_id, parent_run_id="dag")

    first = etl(first_day, "etl-1")
    assert f"in the job worker (pid {worker.pid}, job 1)" in task_log()  # not a spark-submit
    assert "spark-submit" not in task_log()
    assert first["summary"].startswith(f"batch {first_day}") and get_run("etl-1").result == first
    jvms = {p.pid for p in worker.children(recursive=True) if p.name() == "java"}
    began = time.monotonic()
    second = etl(second_day, "etl-2")
    warm_s = time.monotonic() - began
    assert f"(pid {worker.pid}, job 2)" in task_log() and "commit 1" in second["summary"]
    assert {p.pid for p in worker.children(recursive=True) if p.name() == "java"} == jvms  # the same JVM
    assert _commits() == {key: [0, 1] for key in GROUPS}
    print(f"second ETL in the warm worker: {warm_s:.1f} s")

    # Bad input: the job's one-line error and exit code, as from a process of its own; a known
    # error leaves the worker as it was (job 3 runs in the same image).
    with pytest.raises(AirflowFailException, match=r"etl job exited 2: .*batch"):
        etl("2026-13-45", "etl-bad")
    assert f"(pid {worker.pid}, job 3)" in task_log()

    # Only its owner's stage jobs, under its own settings, with a job's own variables only.
    socket = airflow_service().job_worker_socket
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
    client = _client()
    assert client.run(_request("os", "-c", "1"), print) is None and "not a stage's module" in client.why_not
    assert client.run(_request("jobs.etl.main", settings="other"), print) is None
    assert client.why_not == "it runs with other settings than the task"
    assert client.run(_request("jobs.etl.main", env={"PATH": "/tmp"}), print) is None
    assert "a job brings only" in client.why_not
    assert _commits() == {key: [0, 1] for key in GROUPS}  # nothing ran

    worker.kill()
    worker.wait()
    client = _client()
    assert client.run(_request("jobs.etl.main"), print) is None and "none is running" in client.why_not


class _Killed(Exception):
    """What the test raises in the middle of a job's output: the task's end, as a kill would."""


def test_a_task_killed_mid_job_takes_the_job_along_and_the_worker_starts_afresh(
    worker: psutil.Process,
) -> None:
    project = create_project("fraud")
    first_day, _ = generate(project.fs, DemoSpec(rows=2_000, days=2, seed=3))
    request = _request("jobs.etl.main", "--project", "fraud", "--batch", first_day, "--run-id", "etl-k",
                       project="fraud")  # fmt: skip
    job_processes: list[psutil.Process] = []
    busy: list[str] = []

    def until_validated(line: str) -> None:
        if "validation" in line:  # validated, not yet published
            job_processes.extend(worker.children(recursive=True))  # its JVM and Python workers
            other = _client(wait_s=0.5)  # meanwhile, a task that will not wait runs its job itself
            busy.append(f"{other.run(_request('jobs.etl.main'), print)} {other.why_not}")
            raise _Killed

    with pytest.raises(_Killed):
        _client().run(request, until_validated)
    assert busy == ["None it stayed busy for 0.5 s"]
    assert any(p.name() == "java" for p in job_processes)
    _gone, alive = psutil.wait_procs(job_processes, timeout=30)
    assert not alive  # killed, and reaped: no zombie left under the worker's new image
    assert _commits() == {key: [] for key in GROUPS}  # nothing published

    # The retry (same run id) runs in the fresh image of the same process, and publishes once.
    lines: list[str] = []
    client = _client()
    assert client.run(request, lines.append) == 0, lines
    assert client.worker == f"pid {worker.pid}, job 1"
    assert _commits() == {key: [0] for key in GROUPS}
    log = airflow_service().job_worker_socket.with_name("job-worker.log").read_text()
    assert "starting afresh: its task went away mid-job" in log
