"""The inference archive on every backend: appended, then read by a fresh process (as `fjord monitor
archive` reads it) that prints what it read and exits 0. (A threaded scan through Python file objects
on a remote root can abort such a process at exit, apache/arrow#34314; that abort is not reliably
reproduced here: this test passed with the old scan too. It checks the round trip on each backend.)"""

import json
import subprocess
import sys
from datetime import UTC, datetime

import orjson
import pyarrow as pa

from fjord.fs import shared_root
from jobs.monitor import stream
from jobs.monitor.archive import InferenceArchive

T0 = int(datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp() * 1000)

READ = """
import json
from fjord.fs import shared_root
from jobs.monitor.archive import InferenceArchive
archive = InferenceArchive(shared_root(), "fraud")
stats = archive.stats()
later = archive.records(start="2026-12-03T12:00:01Z", kind="response")
later_ids = later["inference_id"].to_pylist()
print(json.dumps({"records": stats["records"], "days": stats["days"], "later": later_ids}))
"""


def _batch(ids: list[str], first_offset: int) -> pa.Table:
    rows = []
    for i, inference_id in enumerate(ids):
        ts = T0 + 1000 * (first_offset + i)
        for kind in ("request", "response"):
            record = {"inferenceId": inference_id, "type": kind, "modelName": "fraud", "modelVersion": 1,
                      "requestTimestamp": ts}  # fmt: skip
            rows.append({"inference_id": inference_id, "type": kind, "model": "fraud", "version": 1,
                         "api": "rest", "request_ms": ts, "http_code": 200 if kind == "response" else None,
                         "latency_ms": None, "value": orjson.dumps(record).decode(), "topic": "t",
                         "partition": 0, "offset": 2 * (first_offset + i) + len(rows) % 2})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=pa.schema([stream.OUTPUT.field(n) for n in stream.ARCHIVED]))


def test_archive_read_by_a_fresh_process_on_each_backend(storage_root: str) -> None:
    archive = InferenceArchive(shared_root(), "fraud")
    assert archive.append(_batch(["a", "b"], 0), "query", 0) == 4
    assert archive.append(_batch(["c"], 2), "query", 1) == 2
    done = subprocess.run([sys.executable, "-c", READ], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"records": 6, "days": ["2026-12-03"], "later": ["b", "c"]}
