"""The DuckDB engine's choice between gathering a joined source's features by position and joining
them wide: by the size of the selected columns against the budget, and its reading of the limit."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore.engines import JoinPlan, Source
from featurestore.engines.duckdb import DuckDBJoinEngine, _gathers, memory_bytes


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), (" 1.5 gb ", 1_500_000_000), ("100", 100),
     ("lots", None), ("2 parsecs", None), ("1.2.3GB", None)],
)  # fmt: skip
def test_memory_limits_read_as_duckdb_reads_them(limit: str, expected: int | None) -> None:
    assert memory_bytes(limit) == expected


def _source(tmp_path: Path, name: str, rows: int) -> Source:
    ids = list(range(rows))
    table = pa.table({"k": ids, "ts": ids, "x": [i / 3 for i in ids], "y": [1.5] * rows})
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return Source((path.as_uri(),), "ts", ("x",), (("k", "k"),))


def test_sources_are_gathered_while_their_selected_columns_fit_the_budget(tmp_path: Path) -> None:
    left = _source(tmp_path, "left", 10)
    small, large = _source(tmp_path, "small", 1_000), _source(tmp_path, "large", 100_000)
    plan = JoinPlan(left, (large, small))
    assert set(_gathers(plan, 10**9)) == {0, 1}
    only_small = _gathers(plan, 100_000)  # the large one's x alone is 800 kB uncompressed
    assert set(only_small) == {1}
    assert len(only_small[1].columns) == 1  # the selected column only, not y
    assert _gathers(plan, 0) == {}


def test_a_file_of_an_older_schema_gives_nulls_gathered_as_joined_wide(tmp_path: Path) -> None:
    """Feature rows in two files, the first written before feature x existed: x is null for its
    rows, gathered or joined wide."""
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    pq.write_table(pa.table({"k": [1, 2], "ts": [1, 1]}), old)
    pq.write_table(pa.table({"k": [1], "ts": [5], "x": [7.5]}), new)
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"k": [1, 2, 1], "ts": [2, 2, 6]}), labels)
    left = Source((labels.as_uri(),), "ts", (), (("k", "k"),))
    plan = JoinPlan(left, (Source((old.as_uri(), new.as_uri()), "ts", ("x",), (("k", "k"),)),))
    assert set(_gathers(plan, 10**9)) == {0}
    wide = DuckDBJoinEngine()
    wide.gather_bytes = lambda: 0  # type: ignore[method-assign]
    expected = {"k": [1, 2, 1], "x": [None, None, 7.5]}
    for engine in (DuckDBJoinEngine(), wide):
        assert engine.to_arrow(plan).select(["k", "x"]).to_pydict() == expected
