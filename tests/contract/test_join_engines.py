"""Point-in-time correctness, proven against a brute-force reference on random data, for every engine.

Random label rows (duplicate keys, missing keys) against random feature rows (ties with label times,
late-arriving rows after the label, null feature values), with and without max_lookback. Both engines
must return exactly the reference's rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.engines import JoinEngine, JoinPlan, Source, join_engine
from featurestore.engines.duckdb import DuckDBJoinEngine
from featurestore.schema import TIMESTAMP

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = st.integers(min_value=0, max_value=4)
MINUTES = st.integers(min_value=0, max_value=30)

label_rows = st.lists(st.tuples(KEYS, MINUTES), min_size=0, max_size=25)
feature_rows = st.dictionaries(
    st.tuples(KEYS, MINUTES),  # unique (key, time): the offline store upserts on them
    st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
    max_size=25,
)
lookbacks = st.one_of(st.none(), st.integers(min_value=0, max_value=20).map(lambda m: timedelta(minutes=m)))


def _write(directory: Path, table: pa.Table, files: int = 1) -> tuple[str, ...]:
    """``table`` as ``files`` Parquet files (consecutive slices; the last may be empty)."""
    directory.mkdir(parents=True, exist_ok=True)
    uris, size = [], -(-table.num_rows // files) if table.num_rows else 0
    for i in range(files):
        path = directory / f"{i}-{uuid.uuid4().hex}.parquet"
        pq.write_table(table.slice(i * size, size), path)
        uris.append(path.as_uri())
    return tuple(uris)


def reference(labels, features, lookback):
    """For each label row: the latest feature row of its key at or before its time (or nulls)."""
    out = []
    for i, (key, minute) in enumerate(labels):
        candidates = [(m, v) for (k, m), v in features.items() if k == key and m <= minute]
        value = None
        if candidates:
            m, v = max(candidates)
            if lookback is None or timedelta(minutes=minute - m) <= lookback:
                value = v
        out.append((key, T0 + timedelta(minutes=minute), i, value))
    return sorted(out, key=lambda r: (r[1], r[0], r[2]))


def _engine(name: str) -> JoinEngine:
    """The engine by name; "duckdb-wide" is DuckDB with no budget to gather features by position
    (every source joined wide, as a source too large for memory is)."""
    if name != "duckdb-wide":
        return join_engine(name)
    engine = DuckDBJoinEngine()
    engine.gather_bytes = lambda: 0  # type: ignore[method-assign]
    return engine


def run_engine(engine: str, tmp: Path, labels, features, lookback, files: int = 1):
    left = pa.table(
        {
            "cc_num": pa.array([k for k, _ in labels], pa.int64()),
            "ts": pa.array([T0 + timedelta(minutes=m) for _, m in labels], TIMESTAMP),
            "row": pa.array(range(len(labels)), pa.int64()),
        }
    )
    right = pa.table(
        {
            "cc_num": pa.array([k for k, _ in features], pa.int64()),
            "ts": pa.array([T0 + timedelta(minutes=m) for _, m in features], TIMESTAMP),
            "amount": pa.array(list(features.values()), pa.float64()),
        }
    )
    plan = JoinPlan(
        Source(_write(tmp / "l", left), "ts", ("row",), (("cc_num", "cc_num"),), schema=left.schema),
        (
            Source(
                _write(tmp / "r", right, files),
                "ts",
                ("amount",),
                (("cc_num", "cc_num"),),
                lookback,
                schema=right.schema,
            ),
        ),
    )
    table = _engine(engine).to_arrow(plan)
    assert table.column_names == ["cc_num", "ts", "row", "amount"]
    rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert len(rows) == len(labels)  # exactly one row per label row: none dropped, none doubled
    return sorted(rows, key=lambda r: (r[1], r[0], r[2]))


@pytest.mark.parametrize(
    "engine", ["duckdb", "duckdb-wide", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])]
)
def test_point_in_time_join_matches_brute_force(engine, tmp_path_factory, request) -> None:
    """DuckDB gathers the features by position (the default here) or joins them wide; the feature
    rows are spread over one to three files (a position names its file)."""
    if engine == "spark":
        request.getfixturevalue("spark")
    examples = 60 if engine.startswith("duckdb") else 12

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(labels=label_rows, features=feature_rows, lookback=lookbacks, files=st.integers(1, 3))
    def check(labels, features, lookback, files):
        tmp = tmp_path_factory.mktemp("pit")
        got = run_engine(engine, tmp, labels, features, lookback, files)
        assert got == reference(labels, features, lookback)

    check()


def test_equal_time_is_included_and_later_rows_never_leak(tmp_path) -> None:
    labels = [(1, 10), (1, 10), (2, 5)]
    features = {(1, 10): 1.0, (1, 11): 99.0, (2, 6): 42.0}
    rows = run_engine("duckdb", tmp_path, labels, features, None)
    assert [r[3] for r in rows] == [None, 1.0, 1.0]  # key 2: only a later row exists -> null
