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

from featurestore.engines import JoinPlan, Source, join_engine
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


def _write(directory: Path, table: pa.Table) -> tuple[str, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.parquet"
    pq.write_table(table, path)
    return (path.as_uri(),)


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


def run_engine(engine: str, tmp: Path, labels, features, lookback):
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
                _write(tmp / "r", right),
                "ts",
                ("amount",),
                (("cc_num", "cc_num"),),
                lookback,
                schema=right.schema,
            ),
        ),
    )
    table = join_engine(engine).to_arrow(plan)
    assert table.column_names == ["cc_num", "ts", "row", "amount"]
    rows = list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert len(rows) == len(labels)  # exactly one row per label row: none dropped, none doubled
    return sorted(rows, key=lambda r: (r[1], r[0], r[2]))


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.slow])]
)
def test_point_in_time_join_matches_brute_force(engine, tmp_path_factory, request) -> None:
    if engine == "spark":
        request.getfixturevalue("spark")
    examples = 60 if engine == "duckdb" else 12

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(labels=label_rows, features=feature_rows, lookback=lookbacks)
    def check(labels, features, lookback):
        tmp = tmp_path_factory.mktemp("pit")
        assert run_engine(engine, tmp, labels, features, lookback) == reference(labels, features, lookback)

    check()


def test_equal_time_is_included_and_later_rows_never_leak(tmp_path) -> None:
    labels = [(1, 10), (1, 10), (2, 5)]
    features = {(1, 10): 1.0, (1, 11): 99.0, (2, 6): 42.0}
    rows = run_engine("duckdb", tmp_path, labels, features, None)
    assert [r[3] for r in rows] == [None, 1.0, 1.0]  # key 2: only a later row exists -> null
