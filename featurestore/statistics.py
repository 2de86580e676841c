"""Descriptive statistics of a commit's data, computed by DuckDB on insert and stored per commit.

Numeric and timestamp features get count, nulls, min, max, mean, std, quantiles and a 10-bin
histogram; strings and booleans get distinct count and the top 10 values. The streaming monitor
compares live traffic with these.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10
TOP_K = 10


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def compute_statistics(con: duckdb.DuckDBPyConnection, relation: str, schema: pa.Schema) -> dict[str, Any]:
    """Statistics of every column of ``relation`` (a table or view name in ``con``)."""
    total = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
    features: dict[str, Any] = {}
    for field in schema:
        col = _quote(field.name)
        nulls = con.execute(f"SELECT count(*) - count({col}) FROM {relation}").fetchone()[0]
        stats: dict[str, Any] = {"type": str(field.type), "count": total, "nulls": nulls}
        if _numeric(field.type):
            stats.update(_numeric_stats(con, relation, col))
        elif pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
            lo, hi = con.execute(f"SELECT min({col}), max({col}) FROM {relation}").fetchone()
            stats.update(min=lo.isoformat() if lo else None, max=hi.isoformat() if hi else None)
        elif pa.types.is_string(field.type) or pa.types.is_boolean(field.type):
            stats.update(_categorical_stats(con, relation, col))
        features[field.name] = stats
    return {"rows": total, "features": features}


def _numeric_stats(con: duckdb.DuckDBPyConnection, relation: str, col: str) -> dict[str, Any]:
    qs = ", ".join(str(q) for q in QUANTILES)
    lo, hi, mean, std, quantiles = con.execute(
        f"SELECT min({col})::DOUBLE, max({col})::DOUBLE, avg({col}), stddev_samp({col}), "
        f"quantile_cont({col}::DOUBLE, [{qs}]) FROM {relation}"
    ).fetchone()
    stats: dict[str, Any] = {"min": lo, "max": hi, "mean": mean, "std": std}
    stats["quantiles"] = dict(zip((str(q) for q in QUANTILES), quantiles or [], strict=False))
    if lo is not None and hi is not None:
        width = (hi - lo) / HISTOGRAM_BINS or 1.0
        rows = con.execute(
            f"SELECT least(floor(({col} - ?) / ?)::BIGINT, {HISTOGRAM_BINS - 1}) AS bin, count(*) "
            f"FROM {relation} WHERE {col} IS NOT NULL GROUP BY bin ORDER BY bin",
            [lo, width],
        ).fetchall()
        counts = dict(rows)
        stats["histogram"] = {
            "edges": [lo + i * width for i in range(HISTOGRAM_BINS + 1)],
            "counts": [counts.get(i, 0) for i in range(HISTOGRAM_BINS)],
        }
    return stats


def _categorical_stats(con: duckdb.DuckDBPyConnection, relation: str, col: str) -> dict[str, Any]:
    distinct = con.execute(f"SELECT approx_count_distinct({col}) FROM {relation}").fetchone()[0]
    top = con.execute(
        f"SELECT {col}::VARCHAR, count(*) AS n FROM {relation} WHERE {col} IS NOT NULL "
        f"GROUP BY 1 ORDER BY n DESC, 1 LIMIT {TOP_K}"
    ).fetchall()
    return {"distinct": distinct, "top": [{"value": v, "count": n} for v, n in top]}
