"""The monitor's columnar path counts exactly what the per-record path counts, and leaves it every
record it cannot show it counts the same way."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pyarrow as pa
import pytest

from jobs.monitor import columnar, stream

REFERENCES = {
    ("m", 1): {
        "features": {
            "x": {"kind": "continuous", "edges": [0.0, 1.0, 2.0]},
            "c": {"kind": "categorical", "frequencies": {"a": 1}},
            "k": {"kind": "categorical", "frequencies": {"1": 1}},
        }
    }
}
OPTIONS = {"window_ms": 10_000, "output": "p", "positive_threshold": 0.5}


def _request(ts: int, version: int = 1, **inputs: Any) -> dict[str, Any]:
    inputs = inputs or {"x": [0.5, -1.0, None], "c": ["a", "b", None], "k": [1, 2, 1]}
    return {"inferenceId": f"r{ts}", "type": "request", "modelName": "m", "modelVersion": version,
            "api": "rest", "requestTimestamp": ts, "inputs": inputs}  # fmt: skip


def _response(ts: int, version: int = 1, **fields: Any) -> dict[str, Any]:
    record = {"inferenceId": f"s{ts}", "type": "response", "modelName": "m", "modelVersion": version,
              "api": "rest", "requestTimestamp": ts, "httpCode": 200, "latencyMs": 1.5,
              "outputs": {"p": [0.2, 0.9, 0.6]}}  # fmt: skip
    record.update(fields)
    return record


def _raw(values: list[Any]) -> list[bytes | None]:
    return [v if v is None or isinstance(v, bytes) else orjson.dumps(v) for v in values]


def _both(values: list[Any], watermark_ms: int = 0) -> columnar.Columns | None:
    """Count ``values`` both ways and check they agree; what the columnar path took."""
    raw = _raw(values)
    n = len(raw)
    source = pa.table({
        "value": pa.array(raw, pa.binary()), "topic": ["t"] * n,
        "partition": pa.array([2] * n, pa.int32()), "offset": pa.array(range(100, 100 + n), pa.int64()),
    })  # fmt: skip
    archive: list[tuple[Any, ...]] = []
    records = [(v, "t", 2, 100 + i) for i, v in enumerate(raw)]
    alone, alone_dead = stream.count_partition(
        records, REFERENCES, watermark_ms=watermark_ms, archive=archive, **OPTIONS
    )
    counts, dead, archived = stream.count_records(
        source, REFERENCES, watermark_ms=watermark_ms, archive=True, **OPTIONS
    )
    assert counts.rows.keys() == alone.rows.keys()
    for key, (count, total, low, high) in alone.rows.items():
        got = counts.rows[key]
        assert got[0] == count and math.isclose(got[1], total, rel_tol=1e-12, abs_tol=1e-9), key
        assert (got[2], got[3]) == (low, high), key
    assert sorted(dead, key=lambda d: d[2]) == sorted(alone_dead, key=lambda d: d[2])
    assert archived is not None
    expected = stream._archive_table(archive).to_pylist()
    by_offset = lambda row: row["offset"]  # noqa: E731
    assert sorted(archived.to_pylist(), key=by_offset) == sorted(expected, key=by_offset)
    return columnar.columns(source.column("value").combine_chunks(), "p", {"c", "k"})


def test_clean_records_are_all_counted_by_the_columnar_path() -> None:
    values = [_request(1_000), _response(1_000), _request(12_000, version=2), _response(12_000, version=2),
              _request(13_000, x=[], c=[], k=[]), _response(13_500, outputs={"p": None}),
              _response(14_000, httpCode=503, outputs={"p": [1, 0.5], "q": [3.0]}),
              {k: v for k, v in _response(15_000).items() if k not in ("latencyMs", "inferenceId")},
              ]  # fmt: skip
    taken = _both(values)
    assert taken is not None and taken.kept.tolist() == list(range(len(values)))


def test_a_record_with_line_breaks_between_its_tokens_is_one_record() -> None:
    broken = b'{"type":"response",\n"modelName":"m","modelVersion":1,\r\n"requestTimestamp":5,"httpCode":200}'
    taken = _both([_request(1_000), broken, _response(1_000)])
    assert taken is not None and taken.kept.tolist() == [0, 1, 2]


def test_late_records_are_counted_late_and_archived() -> None:
    values = [_request(1_000), _response(1_000), _request(25_000), _response(25_000)]
    taken = _both(values, watermark_ms=20_000)
    assert taken is not None and len(taken.kept) == 4


def test_records_the_check_reads_differently_take_the_per_record_path() -> None:
    values = [
        _request(1_000), _response(1_000),
        b"not json", None, b"[1]", b"  {}", b"{}",
        {**_request(1_000), "type": "other"},
        {k: v for k, v in _request(1_000).items() if k != "modelName"},
        {**_response(1_000), "violations": [{"row": 0, "field": "x"}, {"row": 1, "field": "c"}]},
        {**_response(1_000), "answered": ["a", "b"]},
        _request(2_000, x=[1.0]),  # a feature fewer than the others: counted, one by one
        _request(2_000, x=[1.0, 2.0], c=["a"], k=[1]),  # unequal lengths: a dead letter
        {k: v for k, v in _response(2_000).items() if k != "httpCode"},
        {**_response(2_000), "httpCode": 2**40},  # beyond the archive's int32 column
    ]  # fmt: skip
    taken = _both(values)
    assert taken is not None and taken.kept.tolist() == [0, 1]


@pytest.mark.parametrize(
    "odd",
    [
        b'{"type":"request","modelName":"m","modelVersion":1,"requestTimestamp":5,"inputs":{"x":[NaN]}}',
        b'{"type":"request","modelName":"m","modelVersion":1,"requestTimestamp":5,"inputs":{"x":[-Infinity]}}',
        b'{"type":"response","modelName":"m","modelVersion":1,"requestTimestamp":5,"httpCode":200}\r\n{"a":1}',
        b'{"type":"response","modelName":"m","modelVersion":1,"requestTimestamp":5,"httpCode":200} {"a":1}',
        b'{"type":"response","type":"request","modelName":"m","modelVersion":1,"requestTimestamp":5,"httpCode":1}',
        b'{"type":"response","modelName":"m","modelVersion":"two","requestTimestamp":5,"httpCode":200}',
        b'{"type":"response","modelName":"m","modelVersion":true,"requestTimestamp":5,"httpCode":200}',
        b'{"type":"response","modelName":"m","modelVersion":1.0,"requestTimestamp":5,"httpCode":200}',
        b'{"type":"request","modelName":"m","modelVersion":1,"requestTimestamp":5,"inputs":{"x":3}}',
        b'{"type":"response","modelName":"\xff","modelVersion":1,"requestTimestamp":5,"httpCode":200}',
        b'{"type":"response","modelName":"m","modelVersion":9223372036854775808,"requestTimestamp":5,"httpCode":1}',
        b'{"type":"response","modelName":"m","modelVersion":1,"requestTimestamp":5,"violations":[{"a":1},"b"]}',
        b'{"inferenceId":7,"type":"response","modelName":"m","modelVersion":1,"requestTimestamp":5,"httpCode":1}',
    ],
    ids=[
        "nan",
        "infinity",
        "two-lines",
        "two-objects",
        "key-twice",
        "text-version",
        "boolean-version",
        "float-version",
        "scalar-input",
        "not-utf8",
        "version-beyond-int64",
        "mixed-list",
        "numeric-id",
    ],
)
def test_what_arrow_reads_and_json_refuses_sends_the_partition_one_by_one(odd: bytes) -> None:
    assert _both([_request(1_000), _response(1_000), odd]) is None


def test_a_categorical_feature_read_as_floats_keeps_its_requests_one_by_one() -> None:
    # Arrow reads k = [1] beside k = [1.5] as 1.0; the per-record path counts the text "1"
    taken = _both([_request(1_000), _request(1_000, x=[1.0], c=["a"], k=[1.5]), _response(1_000)])
    assert taken is not None and taken.kept.tolist() == [2]


def test_a_failure_of_the_columnar_path_leaves_the_partition_to_the_per_record_path(monkeypatch) -> None:
    """Seen in the e2e: pyarrow raised combining the reader's chunks; the stream must not die of it."""

    def fail(*_: object) -> None:
        raise pa.ArrowIndexError("array slice would exceed array length")

    monkeypatch.setattr(columnar, "columns", fail)  # this boundary's error path only
    values = [_request(1_000), _response(1_000), b"not json"]
    raw = _raw(values)
    source = pa.table({
        "value": pa.array(raw, pa.binary()), "topic": ["t"] * 3,
        "partition": pa.array([2] * 3, pa.int32()), "offset": pa.array([100, 101, 102], pa.int64()),
    })  # fmt: skip
    counts, dead, archived = stream.count_records(source, REFERENCES, watermark_ms=0, archive=True, **OPTIONS)
    alone, alone_dead = stream.count_partition(
        [(v, "t", 2, 100 + i) for i, v in enumerate(raw)], REFERENCES, watermark_ms=0, **OPTIONS
    )
    assert counts.rows == alone.rows and dead == alone_dead and archived is not None and len(archived) == 2
