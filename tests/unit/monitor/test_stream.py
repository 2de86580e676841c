"""The executor side of the monitor, without Spark: records -> counters and dead letters."""

import math

import orjson

from jobs.monitor import stream

REFERENCES = {
    ("m", 1): {
        "features": {
            "x": {"kind": "continuous", "edges": [0.0, 1.0, 2.0]},
            "c": {"kind": "categorical", "frequencies": {"a": 1}},
        }
    }
}


def _count(values: list, watermark_ms: int = 0) -> tuple[dict, list]:
    records = [
        (v if v is None or isinstance(v, bytes) else orjson.dumps(v), "t", 0, i) for i, v in enumerate(values)
    ]
    counts, dead = stream.count_partition(
        records, REFERENCES, window_ms=10_000, watermark_ms=watermark_ms, output="p", positive_threshold=0.5
    )
    return {(k[3], k[4]): v for k, v in counts.rows.items()}, dead


def _request(ts: int, **inputs) -> dict:
    return {"type": "request", "modelName": "m", "modelVersion": 1, "requestTimestamp": ts, "inputs": inputs}


def _response(ts: int, http: int = 200, latency: float = 2.0, p: list | None = None) -> dict:
    record = {"type": "response", "modelName": "m", "modelVersion": 1, "requestTimestamp": ts}
    record.update(httpCode=http, latencyMs=latency)
    if p is not None:
        record["outputs"] = {"p": p}
    return record


def test_requests_and_responses_become_window_counters() -> None:
    counts, dead = _count([
        _request(1_000, x=[-1.0, 0.5, 5.0, None], c=["a", "b", None, "a"]),
        _response(1_000, p=[0.1, 0.9, 0.7, None]),
        _response(2_000, http=503, latency=8.0),
    ])  # fmt: skip
    assert dead == []
    assert counts[("events", "")][:1] == [3] and counts[("events", "")][2:] == [1_000, 2_000]
    assert counts[("inputs", "")][:2] == [1, 4.0]  # one request of 4 rows
    assert counts[("requests", "")][0] == 2 and counts[("errors", "")][0] == 1
    assert {k for (m, k) in counts if m == "f:x"} == {"-1", "1", "3", "null"}  # below, (0, 1], above, null
    assert counts[("f:x", "3")][:2] == [1, 5.0]
    assert counts[("f:c", "a")][0] == 2 and counts[("f:c", "null")][0] == 1
    assert counts[("positive", "")][0] == 2 and counts[("prediction", "18")][0] == 1
    latency = [v for (m, _), v in counts.items() if m == "latency"]
    assert sorted(v[2] for v in latency) == [2.0, 8.0] and math.isclose(sum(v[1] for v in latency), 10.0)


def test_bad_records_are_dead_letters_with_their_reason() -> None:
    _, dead = _count([
        b"not json", b"[1]", None, {"type": "other"}, {"type": "request"},
        {**_request(1, x=[1.0]), "modelVersion": "two"}, {**_request(1, x=[1.0]), "requestTimestamp": None},
        _request(1, x=[1.0], c=["a", "b"]), {**_request(1), "inputs": {"x": 3}},
        {**_response(1), "httpCode": None},
    ])  # fmt: skip
    assert [d[4] for d in dead] == [
        "not valid JSON", "not a JSON object", "empty record", "type is neither request nor response",
        "no modelName", "no modelVersion (an integer)", "no requestTimestamp (ms since the epoch)",
        "inputs of unequal lengths", "inputs are not name -> list of values", "a response without httpCode",
    ]  # fmt: skip
    assert dead[0][3] == "not json" and dead[0][2] == 0  # the record itself and its offset


def test_records_of_closed_windows_are_late_and_not_counted() -> None:
    counts, _ = _count([_response(1_000), _response(25_000)], watermark_ms=20_000)
    assert counts[("late", "")][0] == 1 and counts[("requests", "")][0] == 1


def test_flagged_input_rule_violations_are_counted_by_field() -> None:
    flagged = _response(1_000, p=[0.5, 0.5])
    flagged["violations"] = [
        {"row": 0, "field": "amount", "value": "-5", "rule": "must be within [0, 100000]"},
        {"row": 1, "field": "amount", "value": "-1", "rule": "must be within [0, 100000]"},
        {"row": 1, "field": "category", "value": "'nope'", "rule": "must be one of [...]"},
        "not a violation",
    ]
    counts, dead = _count([flagged, _response(1_500, p=[0.1])])
    assert dead == []
    assert counts[("violations", "amount")][0] == 2 and counts[("violations", "category")][0] == 1
    assert {k for (m, k) in counts if m == "violations"} == {"amount", "category"}


def test_every_valid_record_and_only_those_become_an_archive_row_with_its_kafka_position() -> None:
    late = _response(1_000, p=[0.2])
    values = [_request(50_000, x=[1.0]), b"not json", {**late, "inferenceId": "i-1"}, {"type": "request"}]
    records = [(v if isinstance(v, bytes) else orjson.dumps(v), "t", 3, 10 + i) for i, v in enumerate(values)]
    archive: list = []
    stream.count_partition(records, REFERENCES, window_ms=10_000, watermark_ms=40_000, output="p",
                           positive_threshold=0.5, archive=archive)  # fmt: skip
    rows = [dict(zip(stream.ARCHIVED, row, strict=True)) for row in archive]
    positions = [(r["type"], r["partition"], r["offset"]) for r in rows]
    assert positions == [("request", 3, 10), ("response", 3, 12)]
    late_row = rows[1]  # a record late for its window is still archived, whole and as it came
    assert (late_row["inference_id"], late_row["http_code"], late_row["latency_ms"]) == ("i-1", 200, 2.0)
    assert orjson.loads(late_row["value"]) == {**late, "inferenceId": "i-1"}
    table = stream._archive_table(archive)
    assert table.column("inference_id").to_pylist() == [None, "i-1"] and table.num_rows == 2
