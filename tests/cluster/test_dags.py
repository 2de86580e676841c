"""The three DAGs on the cluster profile, with the same DAG files as on the embedded one (`make
test-cluster`): `fjord run` runs fraud_training_pipeline (and the drift alert's fraud_retrain) on the
standalone master, HDFS with 2 replicas and Celery workers; then two faults between and during DAG
runs: the NameNode restarted, and the Celery worker running fraud_batch_inference's task killed with
everything it started (its host gone). docs/scaling.md and docs/reliability.md give the figures.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from fjord.config import get_settings, reset_settings
from tests.conftest import run_fjord
from tests.waiting import wait_for


@pytest.fixture
def cluster_home(fjord_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FJORD_SERVICES__PROFILE", "cluster")
    monkeypatch.setenv("FJORD_SERVICES__PREFERRED_PORTS", "false")
    reset_settings()
    yield fjord_home
    down = run_fjord("down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.timeout(3600)
def test_the_three_dags_run_on_the_cluster_through_a_namenode_restart_and_a_celery_worker_killed(
    cluster_home: Path,
) -> None:
    from fjord.airflow.client import AirflowClient
    from fjord.airflow.stack import airflow_service
    from fjord.services import service

    began = time.monotonic()
    first = run_fjord("run", timeout=3000)
    run_s = time.monotonic() - began
    out = first.stdout
    assert first.returncode == 0, out[-4000:] + first.stderr[-3000:]
    for text in ("fraud_training_pipeline success", "training dataset v1", "deployed fraud v1"):
        assert text in out, text
    reset_settings()
    settings = get_settings()

    # Spark: the jobs were applications of the standalone master (none of them local).
    spark = service("spark")
    state = spark.cluster_state(spark.recorded_ports())
    apps = [app["name"] for app in state.get("completedapps", []) + state.get("activeapps", [])]
    assert len(apps) >= 3, apps  # the 2 ETL batches, the training dataset... (and the monitor)
    # the monitor streams on, holding monitor.cluster_cores of the 2 cores: the DAGs' jobs had the rest
    monitors = [app for app in state.get("activeapps", []) if app["name"].startswith("fjord-monitor-")]
    assert [app["cores"] for app in monitors] == [1], state.get("activeapps")

    # Airflow: every task instance of the run went through a Celery worker.
    airflow = airflow_service(settings)
    client = AirflowClient.connect()
    run_id = re.search(r"run (manual__\S+):", out).group(1)
    tasks = client.task_states("fraud_training_pipeline", run_id)
    received = sum(_celery_received(airflow.log(f"celery-worker{i}")) for i in (1, 2))
    assert received >= len([t for t in tasks if t.state == "success"]) > 5, (received, tasks)

    # HDFS: the published feature data has 2 replicas of every block.
    from hdfs_native import Client

    root = str(settings.storage.root)
    hdfs_url, root_path = root.split("/fjord", 1)[0], "/fjord" + root.split("/fjord", 1)[1]
    files = [f for f in Client(hdfs_url).list_status(f"{root_path}/Projects/fraud", recursive=True)
             if not f.isdir and f.length > 0]  # fmt: skip
    assert files and {f.replication for f in files} == {2}, {f.replication for f in files}

    # fraud_retrain: the drift alert's run (when the monitor raised one), followed to its end.
    if found := re.search(r"-> fraud_retrain run (\S+):", out):
        assert client.follow("fraud_retrain", found.group(1), timeout_s=1200) == "success"
    else:
        retrain = client.trigger("fraud_retrain", conf={})
        assert client.follow("fraud_retrain", retrain["dag_run_id"], timeout_s=1200) == "success"

    # The NameNode restarted between two DAG runs: the next one succeeds.
    hdfs = service("hdfs")
    namenode = hdfs.pids()["namenode"]
    psutil.Process(namenode).send_signal(signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(namenode) or psutil.Process(namenode).status() == "zombie", 30,
             "the NameNode to die")  # fmt: skip
    hdfs.start()

    # fraud_batch_inference, its task's Celery worker killed mid-task with all it started.
    client.wait_for_dag("fraud_batch_inference")
    client.unpause("fraud_batch_inference")
    batch = client.trigger("fraud_batch_inference", conf={})["dag_run_id"]
    workers = {airflow.pids()[f"celery-worker{i}"]: f"celery-worker{i}" for i in (1, 2)}

    def running_worker() -> int | None:
        for ti in client.request("GET", f"/dags/fraud_batch_inference/dagRuns/{batch}/taskInstances")[
            "task_instances"
        ]:
            if ti["state"] == "running" and ti.get("pid"):
                try:
                    task_process = psutil.Process(ti["pid"])
                    ancestors = {p.pid for p in task_process.parents()}
                    if not task_process.children():  # mid-task: once its job's process runs
                        return None
                except psutil.NoSuchProcess:
                    return None
                return next((pid for pid in workers if pid in ancestors), None)
        return None

    killed = wait_for(
        running_worker, 600, "fraud_batch_inference's job running in a Celery worker", interval=0.5
    )
    tree = [psutil.Process(killed), *psutil.Process(killed).children(recursive=True)]
    for process in tree:  # the host is gone: the worker, its task, the Spark driver it started
        process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert client.follow("fraud_batch_inference", batch, timeout_s=900) == "success"
    retried_s = time.monotonic() - killed_at
    (task,) = client.task_states("fraud_batch_inference", batch)
    assert task.try_number >= 2  # failed with its worker, retried on the other
    result = client.xcom("fraud_batch_inference", batch, task)
    assert result["dataset_version"] == 1 and result["rows"] > 9000  # one dataset: the job's result single
    again = client.trigger("fraud_batch_inference", conf={})["dag_run_id"]  # on the worker left
    assert client.follow("fraud_batch_inference", again, timeout_s=900) == "success"
    (task,) = client.task_states("fraud_batch_inference", again)
    reused = client.xcom("fraud_batch_inference", again, task)
    assert reused["dataset_version"] == 1 and reused["reused"]  # the same day scored once, not v2

    print(
        f"cluster: fjord run {run_s:.0f} s; {len(apps)} Spark applications on the master; "
        f"{received} Celery task deliveries; {len(files)} HDFS files, 2 replicas each; "
        f"{workers[killed]} killed mid-task ({len(tree)} processes): retried and done in {retried_s:.0f} s"
    )
    client.close()


def _celery_received(log: Path) -> int:
    """The task messages a Celery worker took (its log's "Task ...execute_workload[...] received")."""
    return sum("received" in line and "execute_workload" in line for line in log.read_text().splitlines())
