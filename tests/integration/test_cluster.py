"""The cluster profile, reduced to what CI can afford (docs/scaling.md): its multi-process topology
starts, a Spark job runs on the standalone master's workers and writes to HDFS with two replicas,
Kafka replicates three times, an Airflow task runs in a Celery worker, `fjord status` shows every
process and `fjord down` leaves none.

The fault matrix (a worker, a DataNode, a broker killed mid-work) is `make test-cluster`'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from tests.conftest import REPO, run_fjord
from tests.waiting import wait_for

JOB = """
import json, os
from fjord.projects import create_project
from fjord.spark import get_spark

project = create_project("clustered")
spark = get_spark(project, app_name="cluster-test")
def jvm(_):  # this Python worker's ancestors: pyspark's daemon, the executor JVM, the Spark worker...
    import psutil
    return tuple(p.pid for p in psutil.Process().parents())
rows = spark.sparkContext.parallelize(range(8), 4).map(jvm).collect()
ids = spark.createDataFrame([(i,) for i in range(1000)], "id long")
ids.write.parquet(project.fs.spark_uri("Resources/ids"))
print(json.dumps({"master": spark.sparkContext.master, "executor_jvms": sorted(set(rows)),
                  "root": project.fs.uri(""), "files": project.fs.find("Resources/ids", suffix=".parquet")}))
"""


@pytest.mark.timeout(600)
def test_the_cluster_profile_runs_spark_on_workers_hdfs_with_two_replicas_three_brokers_and_celery(
    fjord_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FJORD_SERVICES__PROFILE": "cluster", "FJORD_SERVICES__PREFERRED_PORTS": "false"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    began = time.monotonic()
    started = run_fjord("services", "start", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    start_s = time.monotonic() - began

    status = json.loads(run_fjord("status", "--json").stdout)
    processes = {c["name"]: set(c["pids"]) for c in status}
    assert processes["spark"] == {"master", "worker1", "worker2"}
    assert processes["hdfs"] == {"namenode", "datanode", "datanode2"}
    assert processes["kafka"] == {"kafka1", "kafka2", "kafka3"}
    assert {"postgres", "redis"} <= processes.keys() and "s3" not in processes

    job = subprocess.run([sys.executable, "-c", JOB], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    result = json.loads(job.stdout.strip().splitlines()[-1])
    spark = next(c for c in status if c["name"] == "spark")
    assert result["master"] == spark["url"]
    # The tasks ran in executor JVMs the workers started, not in the driver.
    workers = {spark["pids"]["worker1"], spark["pids"]["worker2"]}
    # (pyspark's daemon, the executor JVM, the Spark worker that started it, ...)
    started_by = {ancestors[2] for ancestors in result["executor_jvms"]}
    assert started_by and started_by <= workers, (result["executor_jvms"], workers)

    from hdfs_native import Client

    from fjord.config import reset_settings
    from fjord.services import service

    reset_settings()
    hdfs = next(c for c in status if c["name"] == "hdfs")
    assert result["root"].startswith(hdfs["url"] + "/fjord/") and result["files"]
    written = urlparse(result["root"]).path.rstrip("/") + "/" + result["files"][0]
    assert Client(hdfs["url"]).get_file_info(written).replication == 2

    from fjord import kafka

    kafka.ensure_topic("cluster_check")
    admin = kafka.admin()
    described = admin.describe_topics(["cluster_check"])[0]["partitions"][0]
    admin.close()
    assert sorted(described["replica_nodes"]) == [1, 2, 3] and len(described["isr_nodes"]) == 3
    assert service("kafka").server_properties(_ports("kafka", fjord_home))["min.insync.replicas"] == 2

    _a_task_runs_in_a_celery_worker(monkeypatch)
    _mlflow_keeps_runs_in_postgresql_and_artifacts_on_hdfs(tmp_path=fjord_home)

    pids = [pid for c in status for pid in c["pids"].values()]
    stopped = run_fjord("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    print(f"cluster profile: services up in {start_s:.1f} s")


def _a_task_runs_in_a_celery_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow on the profile: the CeleryExecutor, two workers, a task run in one of them."""
    from fjord.airflow.client import AirflowClient
    from fjord.airflow.stack import airflow_service
    from fjord.config import get_settings, reset_settings

    monkeypatch.setenv("FJORD_AIRFLOW__DAGS_FOLDER", str(Path(__file__).parent / "cluster_dags"))
    reset_settings()
    airflow = airflow_service(get_settings())
    airflow.start()
    try:
        pids = airflow.pids()
        assert {"celery-worker1", "celery-worker2"} <= pids.keys() and "job-worker" not in pids
        client = AirflowClient.connect()
        client.wait_for_dag("celery_probe")
        client.unpause("celery_probe")
        run = client.trigger("celery_probe")["dag_run_id"]
        state = wait_for(
            lambda: (s := client.dag_run("celery_probe", run)["state"]) in ("success", "failed") and s,
            180, "celery_probe to end", interval=1,
        )  # fmt: skip
        assert state == "success"
        [task] = client.task_states("celery_probe", run)
        ancestry = client.xcom("celery_probe", run, task)
        workers = {pids["celery-worker1"], pids["celery-worker2"]}
        assert workers & set(ancestry), (ancestry, pids)
    finally:
        airflow.stop()


def _mlflow_keeps_runs_in_postgresql_and_artifacts_on_hdfs(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from fjord.config import get_settings, reset_settings
    from fjord.experiment.tracking import client, start_server, stop_server, tracking_uri
    from fjord.fs import shared_root

    reset_settings()
    settings = get_settings()
    start_server(settings)
    try:
        mlflow = client(tracking_uri(settings))
        experiment = mlflow.create_experiment("cluster-check")
        run = mlflow.create_run(experiment).info.run_id
        note = tmp_path / "note.txt"
        note.write_text("on HDFS")
        mlflow.log_artifact(run, str(note))
        stored = [p for p in shared_root().find("MLflow") if p.endswith("note.txt")]
        assert stored and shared_root().read_text(stored[0]) == "on HDFS"
        assert shared_root().uri().startswith("hdfs://")
        database = make_url(str(settings.metadata.url)).set(database="mlflow")
        engine = create_engine(database)
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(text("SELECT name FROM experiments"))]
        engine.dispose()
        assert "cluster-check" in names
    finally:
        stop_server(settings)


def _ports(name: str, home: Path) -> dict[str, int]:
    from fjord.cluster import services_home

    return json.loads((services_home(home) / "services" / name / "state.json").read_text())["ports"]
