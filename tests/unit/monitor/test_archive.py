"""The inference archive on a local Delta table: one append per batch id, time-range and point-in-time
reads, one row per served row with the passthrough fields, a record delivered twice read once."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa

from fjord.fs import SharedFS
from jobs.monitor import stream
from jobs.monitor.archive import InferenceArchive, predictions, requests, write_files

T0 = int(datetime(2026, 12, 3, 23, 59, tzinfo=UTC).timestamp() * 1000)


def _rows(records: list[dict], first_offset: int) -> pa.Table:
    rows = [
        {"inference_id": r["inferenceId"], "type": r["type"], "model": "fraud", "version": r["modelVersion"],
         "api": "rest", "request_ms": r["requestTimestamp"], "http_code": r.get("httpCode"),
         "latency_ms": r.get("latencyMs"), "value": orjson.dumps(r).decode(), "topic": "t", "partition": 0,
         "offset": first_offset + i}
        for i, r in enumerate(records)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=pa.schema([stream.OUTPUT.field(n) for n in stream.ARCHIVED]))


def _call(inference_id: str, ts: int, tids: list, version: int = 1) -> list[dict]:
    head = {"inferenceId": inference_id, "modelName": "fraud", "modelVersion": version,
            "requestTimestamp": ts, "passthrough": {"tid": tids}}  # fmt: skip
    rows = len(tids)
    return [
        {**head, "type": "request", "inputs": {"amount": [10.0 * (i + 1) for i in range(rows)]}},
        {**head, "type": "response", "httpCode": 200, "latencyMs": 1.5,
         "outputs": {"fraud_probability": [0.1 * (i + 1) for i in range(rows)]}},
    ]  # fmt: skip


def test_batches_append_once_and_read_back_per_served_row(tmp_path):
    archive = InferenceArchive(SharedFS((tmp_path / "root").as_uri()), "fraud")
    assert archive.stats() == {"uri": archive.uri, "records": 0, "requests": 0, "responses": 0, "days": [],
                               "versions": [], "delta_version": None}  # nothing archived yet  # fmt: skip
    first = _rows(_call("a", T0, [7, None]), 0)  # 23:59 on the 3rd
    second = _rows(_call("b", T0 + 120_000, ["x-1"]), 2)  # 00:01 on the 4th
    assert archive.append(first, "query", 0) == 2
    assert archive.append(first, "query", 0) == 0  # batch 0 replayed: nothing appended
    assert archive.append(second, "query", 1) == 2
    assert archive.stats()["days"] == ["2026-12-03", "2026-12-04"] and archive.stats()["records"] == 4

    served = predictions(archive)
    assert served[["inference_id", "row", "tid", "score"]].to_dict("records") == [
        {"inference_id": "a", "row": 0, "tid": 7, "score": 0.1},
        {"inference_id": "a", "row": 1, "tid": None, "score": 0.2},
        {"inference_id": "b", "row": 0, "tid": "x-1", "score": 0.1},
    ]
    inputs = requests(archive, start="2026-12-04T00:00:00Z")  # the 4th only
    assert inputs[["inference_id", "tid", "inputs.amount"]].to_dict("records") == [
        {"inference_id": "b", "tid": "x-1", "inputs.amount": 10.0}
    ]
    assert len(predictions(archive, as_of=0)) == 2  # Delta version 0: as the first batch left it


def test_a_record_delivered_twice_is_read_once(tmp_path):
    archive = InferenceArchive(SharedFS((tmp_path / "root").as_uri()), "fraud")
    call = _call("a", T0, [1])
    archive.append(_rows(call, 0), "query", 0)
    archive.append(_rows(call[1:], 5), "query", 1)  # the response again, requeued by the server
    assert archive.stats()["records"] == 3  # the table keeps what arrived
    assert len(archive.records()) == 2 and len(predictions(archive)) == 1
    assert archive.records(kind="response")["kafka_offset"].to_pylist() == [1]  # the first delivery


def test_files_the_executors_write_count_only_once_committed_and_once(tmp_path):
    archive = InferenceArchive(SharedFS((tmp_path / "root").as_uri()), "fraud")
    rows = _rows(_call("a", T0, [1]) + _call("b", T0 + 120_000, [2]), 0)  # two days
    files = write_files(archive.uri, rows, 0)
    assert sorted(day for _, day, _, _ in files) == ["2026-12-03", "2026-12-04"]
    write_files(archive.uri, rows, 0)  # a task run twice: its files are never committed
    assert archive.commit_files(files, "query", 0) == 4
    assert archive.commit_files(files, "query", 0) == 0  # the batch replayed
    assert archive.stats()["records"] == 4 and len(predictions(archive)) == 2


def test_compaction_merges_a_days_small_files_and_keeps_rows_and_batch_ids(tmp_path):
    archive = InferenceArchive(SharedFS((tmp_path / "root").as_uri()), "fraud")
    for batch in range(6):  # one small file per micro-batch, all on the 4th
        archive.append(_rows(_call(f"c{batch}", T0 + 120_000 + batch, [batch]), 2 * batch), "query", batch)
    archive.append(_rows(_call("old", T0, [99]), 100), "query", 6)  # the 3rd: not compacted
    before = archive.records().sort_by("inference_id")
    assert len(archive.table().file_uris()) == 7

    assert archive.compact(["2026-12-04"]) == 6
    assert len(archive.table().file_uris()) == 2  # one merged file for the 4th, the 3rd's as it was
    assert archive.records().sort_by("inference_id").equals(before)
    assert archive.committed_batch("query") == 6  # a replayed batch still appends nothing
    assert archive.append(_rows(_call("c5", T0 + 120_005, [5]), 10), "query", 5) == 0
    assert len(predictions(archive, as_of=0)) == 1  # point in time, within the retention
