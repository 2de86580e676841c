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
    deadline = time.monotonic() + 180
    while (replicas := _replicas(hdfs, path)) != [2] * len(replicas) or not replicas:
        assert time.monotonic() < deadline, f"still under-replicated: {replicas}"
        time.sleep(1)
    print(f"publish with a DataNode killed: {publish_s:.1f} s; replicated again in "
          f"{time.monotonic() - began - publish_s:.1f} s")  # fmt: skip
