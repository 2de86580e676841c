"""Parquet written behind the reading (``write_parquet(..., while_writing=...)``): the same file as the
plain stream, the caller's work done in between, and either side's failure raised, never a hang."""

import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.formats import write_parquet


def _reader(batches: int, rows: int = 1000) -> pa.RecordBatchReader:
    schema = pa.schema([("k", pa.int64()), ("x", pa.float64())])
    made = [
        pa.RecordBatch.from_pydict(
            {"k": list(range(b * rows, (b + 1) * rows)), "x": [b / 7] * rows}, schema=schema
        )
        for b in range(batches)
    ]
    return pa.RecordBatchReader.from_batches(schema, iter(made))


@pytest.mark.parametrize("batches", [0, 1, 5])
def test_written_behind_is_the_plain_stream_s_file(batches: int) -> None:
    plain, behind = io.BytesIO(), io.BytesIO()
    assert write_parquet(_reader(batches), plain) == batches * 1000
    seen: list[pa.Table] = []
    done: list[int] = []
    rows = write_parquet(_reader(batches), behind, tap=seen.append,
                         while_writing=lambda: done.append(sum(t.num_rows for t in seen)))  # fmt: skip
    assert rows == batches * 1000 and done == [rows]  # it ran once, after the tap saw every row
    assert pq.read_table(io.BytesIO(behind.getvalue())).equals(pq.read_table(io.BytesIO(plain.getvalue())))


class _Broken(io.BytesIO):
    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        raise OSError("disk full")


def test_a_failed_write_is_raised_to_the_caller() -> None:
    with pytest.raises(OSError, match="disk full"):
        write_parquet(_reader(5), _Broken(), while_writing=lambda: None)
    assert not [t for t in threading.enumerate() if t.name == "fjord-parquet-writer"]


def test_a_failure_while_writing_stops_the_writer_and_is_raised() -> None:
    def fail() -> None:
        raise ValueError("statistics failed")

    with pytest.raises(ValueError, match="statistics failed"):
        write_parquet(_reader(5), io.BytesIO(), while_writing=fail)
    assert not [t for t in threading.enumerate() if t.name == "fjord-parquet-writer"]
