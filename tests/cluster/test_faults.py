"""The cluster profile's faults (issue 28's matrix; `make test-cluster`, not `make test`): a server is
killed mid-work and the work still completes, once, with nothing lost. Each fault has a row in
docs/reliability.md; the results of the last run are in bench/results/test_cluster.xml.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fjord.config import get_settings, reset_settings
from tests.waiting import wait_for


@pytest.fixture
def cluster_home(fjord_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FJORD_SERVICES__PROFILE", "cluster")
    monkeypatch.setenv("FJORD_SERVICES__PREFERRED_PORTS", "false")
    reset_settings()
    return fjord_home


def _replicas(hdfs, path: str) -> list[int]:
    """Each block's live replicas of the file at ``path`` (HDFS's own fsck)."""
    report = subprocess.run(
        [*hdfs._java("org.apache.hadoop.hdfs.tools.DFSck"), path, "-files", "-blocks"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    words = report.stdout.split()
    return [int(word.removeprefix("Live_repl=")) for word in words if word.startswith("Live_repl=")]


@pytest.mark.timeout(600)
def test_a_datanode_killed_mid_publish_leaves_the_publish_whole_and_its_blocks_replicated_again(
    cluster_home: Path,
) -> None:
    from fjord.fs import SharedFS
    from fjord.services import service

    hdfs = service("hdfs")
    hdfs.start()
    reset_settings()
    root = SharedFS(str(get_settings().storage.root))
    root.makedirs("")
    chunk, digest = os.urandom(8 << 20), hashlib.sha256()
    began = time.monotonic()
    with root.publish("Resources/batch") as out, out.open("part-0.bin", "wb") as f:
        for i in range(12):  # 96 MiB, written through one block's pipeline of both DataNodes
            f.write(chunk)
            digest.update(chunk)
            if i == 2:  # 24 MiB in: the second DataNode dies under the writer
                os.kill(hdfs.pids()["datanode2"], signal.SIGKILL)
    publish_s = time.monotonic() - began
    assert root.is_published("Resources/batch")
    assert hashlib.sha256(root.read_bytes("Resources/batch/part-0.bin")).hexdigest() == digest.hexdigest()

    # Back with its DataNode, HDFS copies what only one DataNode held: every block has 2 replicas again.
    hdfs.start()
    path = root.path("Resources/batch/part-0.bin")
    wait_for(lambda: (r := _replicas(hdfs, path)) and r == [2] * len(r), 180, "2 replicas each", interval=1)
    print(f"publish with a DataNode killed: {publish_s:.1f} s; replicated again in "
          f"{time.monotonic() - began - publish_s:.1f} s")  # fmt: skip


@pytest.mark.timeout(600)
def test_a_kafka_broker_killed_under_inference_logging_fails_no_request_and_loses_no_record(
    cluster_home: Path, tmp_path: Path
) -> None:
    import itertools
    import threading
    import uuid

    import httpx

    from fjord import kafka
    from fjord.services import service
    from tests.integration.serving_server import ServerProcess
    from tests.integration.test_inference_log import logged_calls
    from tests.serving_models import write_version
    from tests.waiting import wait_for

    brokers = service("kafka")
    servers = brokers.start()
    reset_settings()
    write_version(tmp_path / "m", 1)
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    server = ServerProcess(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--inference_logging=ALL",
        f"--kafka_bootstrap_servers={servers}", f"--kafka_topic={topic}",
        "--monitoring_config_file=/dev/null", log=tmp_path / "server.log",
    )  # fmt: skip
    failures: list[int] = []
    served: list[float] = []
    answered, stop = [0], threading.Event()
    calls = itertools.count(1000)

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                x = next(calls)
                answer = client.post(url, json={"instances": [{"x": x, "y": 1}]})
                if answer.status_code != 200:
                    failures.append(answer.status_code)
                served.append(float(x))
                answered[0] += 1

    def answers(more: int) -> None:
        target = answered[0] + more
        wait_for(lambda: answered[0] >= target or failures, 120, f"{more} more answers")

    try:
        server.wait_ready("m")
        url = f"{server.url}/v1/models/m:predict"
        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        answers(100)

        def partition() -> dict | None:  # the log topic, once its server created it and it has a leader
            admin = kafka.admin()
            try:
                found = admin.describe_topics([topic])[0]["partitions"]
            finally:
                admin.close()
            return found[0] if found and found[0]["leader_id"] >= 0 else None

        described = wait_for(partition, 60, "the log topic's partition")
        assert sorted(described["replica_nodes"]) == [1, 2, 3]  # the log topic: replicated 3 times
        leader = described["leader_id"]
        os.kill(brokers.pids()[f"kafka{leader}"], signal.SIGKILL)  # the partition's leader
        answers(300)  # two brokers left: min.insync.replicas=2 still holds, acks=all still answered
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []

        found = wait_for(
            lambda: (c := logged_calls(servers, topic)) and len(c) >= len(served) and c, 120, "every record"
        )
        assert found == set(served)  # none lost
        print(f"broker {leader} (the leader) killed under load: {len(served)} calls, 0 failed, 0 lost")
    finally:
        stop.set()
        assert server.stop() == 0


def _etl(project: str, batch: str, on_first_step: object = None) -> str:
    """The ETL of ``project``'s batch on the cluster (spark-submit's way: its own driver, the standalone
    master's executors); its summary line. ``on_first_step`` runs once its first step is done."""
    import sys

    from tests.conftest import REPO

    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.etl.main", f"--project={project}", f"--batch={batch}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    assert job.stdout is not None
    for line in job.stdout:
        lines.append(line)
        if on_first_step is not None and line.startswith("[") and " etl " in line:
            on_first_step()  # type: ignore[operator]
            on_first_step = None
    assert job.wait(timeout=600) == 0, "".join(lines[-30:])
    return next(line for line in lines if line.startswith(f"batch {batch}:"))


@pytest.mark.timeout(900)
def test_a_spark_worker_killed_mid_etl_publishes_once_and_the_same_features(cluster_home: Path) -> None:
    from datetime import date, timedelta

    import pandas.testing

    import featurestore
    from fjord.services import service
    from tests.conftest import run_fjord

    assert run_fjord("services", "start", timeout=300).returncode == 0
    reset_settings()
    batch = (date.today() - timedelta(days=1)).isoformat()
    for project in ("clean", "faulted"):  # the same demo batch (the same seed) in both
        landed = run_fjord("demo", "data", f"--project={project}", "--create", "--rows=10000", "--days=1")
        assert landed.returncode == 0, landed.stdout + landed.stderr
    _etl("clean", batch)
    spark = service("spark")
    killed: list[int] = []

    def kill_a_worker() -> None:
        killed.append(spark.pids()["worker2"])
        os.kill(killed[0], signal.SIGKILL)

    summary = _etl("faulted", batch, on_first_step=kill_a_worker)
    assert killed and "worker2" not in spark.pids()
    assert "commit 0" in summary and "commit 1" not in summary
    for group in ("transactions_features", "fraud_labels", "profile_features", "card_features"):
        clean = featurestore.connect("clean").get_feature_group(group, 1)
        faulted = featurestore.connect("faulted").get_feature_group(group, 1)
        assert len(faulted.commit_details()) == 1, group  # published once
        a, b = (g.read().sort_values(list(g.read().columns)).reset_index(drop=True) for g in (clean, faulted))
        # Equal: exactly, but for floats computed by sums (the windows' standard deviations), whose
        # last bits depend on the order Spark's tasks added them in: within 1e-9, relatively.
        pandas.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=0, obj=group)
        exact = [c for c in a.columns if not a[c].equals(b[c])]
        assert set(exact) <= {"amount_std_4h", "amount_std_24h", "amount_std_7d"}, exact
