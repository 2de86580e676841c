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


# -- reference statistics of a training dataset: what the streaming monitor compares live traffic with --

REFERENCE_PERCENTILES = 101  # 0%, 1%, ..., 100%: the grid live values are counted on
PSI_QUANTILES = tuple(q / 10 for q in range(1, 10))  # PSI counts on the reference's decile bins
MAX_DISCRETE = 100  # a numeric feature with at most this many distinct values is discrete
MAX_CATEGORIES = 1_000


def reference_statistics(table: pa.Table, columns: list[str]) -> dict[str, Any]:
    """Per feature of a training dataset, what a drift test needs of the data a model learned from.

    Numeric features: ``count`` (non-null), ``nulls``, ``mean``, ``std`` (population: what Evidently
    normalises the Wasserstein distance by), ``min``, ``max``, and two grids over the values:

    - ``edges``: the distinct values of a discrete feature (``kind`` "discrete"), else the 101
      percentiles (``kind`` "continuous"), deduplicated; ``cdf``: the share of values <= each edge.
      ``sums``: the sum of the values in each grid bin. A value ``x`` falls in grid bin
      ``i = #(edges < x)`` (``numpy.searchsorted(edges, x)``): bin 0 holds the minimum, bin ``i``
      the values in ``(edges[i-1], edges[i]]``; the monitor adds -1 and ``len(edges)`` for live values
      below the minimum and above the maximum;
    - ``psi_edges``: the reference's deciles, deduplicated, a subset of ``edges``;
      ``psi_counts``: the reference's counts in the bins they bound, ``(-inf, d1], (d1, d2], ...``.

    Strings and booleans: ``count``, ``nulls``, ``frequencies`` (value -> count, the
    ``MAX_CATEGORIES`` most frequent).
    """
    import numpy as np

    features: dict[str, Any] = {}
    for name in columns:
        column = table.column(name)
        nulls = column.null_count
        if _numeric(column.type):
            values = column.drop_null().to_numpy().astype("float64")
            values = values[~np.isnan(values)]  # NaN is missing, as the model server logs it (null)
            features[name] = {
                "type": str(column.type),
                "nulls": int(column.length() - len(values)),
                **_numeric_reference(values),
            }
        else:
            counts = column.drop_null().cast(pa.string()).value_counts().to_pylist()
            counts.sort(key=lambda c: (-c["counts"], c["values"]))
            features[name] = {
                "type": str(column.type),
                "kind": "categorical",
                "count": int(column.length() - nulls),
                "nulls": nulls,
                "frequencies": {c["values"]: int(c["counts"]) for c in counts[:MAX_CATEGORIES]},
            }
    return {"rows": table.num_rows, "features": features}


def _numeric_reference(values: Any) -> dict[str, Any]:
    """One sort of ``values`` gives everything: the distinct values, the percentile grid, the CDF at
    the edges and each bin's count and sum (bins are runs of the sorted values). Equal to numpy's
    ``unique``, ``quantile`` (linear, and inverted CDF for discrete features), ``searchsorted`` and
    ``bincount`` on the unsorted values, at a fifth of their time (tests/unit/featurestore)."""
    import numpy as np

    if not len(values):
        return {"kind": "continuous", "count": 0, "edges": [], "cdf": [], "sums": [], "psi_edges": [],
                "psi_counts": []}  # fmt: skip
    ordered = np.sort(values)
    n = len(ordered)
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1  # where each distinct value's run begins
    discrete = len(starts) + 1 <= MAX_DISCRETE
    if discrete:
        edges = ordered[np.concatenate(([0], starts))]
        psi_edges = np.unique(_inverted_cdf(ordered, PSI_QUANTILES))  # data values
    else:
        grid = _linear_quantiles(ordered, np.linspace(0, 1, REFERENCE_PERCENTILES))
        edges = np.unique(grid)
        psi_edges = np.unique(grid[10:100:10])  # the deciles of the same grid: a subset of edges
    # bin i holds the values in (edges[i-1], edges[i]]: the sorted values up to ``ends[i]``
    ends = np.searchsorted(ordered, edges, side="right")
    begins = np.concatenate(([0], ends[:-1]))
    filled = ends > begins
    sums = np.zeros(len(edges))
    # a filled bin's run ends where the next filled one begins (empty bins lie between), the last at n
    sums[filled] = np.add.reduceat(ordered, begins[filled])
    psi_ends = np.searchsorted(ordered, psi_edges, side="right")
    psi_counts = np.diff(np.concatenate(([0], psi_ends, [n])))
    return {
        "kind": "discrete" if discrete else "continuous",
        "count": n,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(ordered[0]),
        "max": float(ordered[-1]),
        "edges": edges.tolist(),
        "cdf": (ends / n).tolist(),
        "sums": sums.tolist(),
        "psi_edges": psi_edges.tolist(),
        "psi_counts": psi_counts.tolist(),
    }


def _linear_quantiles(ordered: Any, quantiles: Any) -> Any:
    """``numpy.quantile(values, quantiles)`` (method "linear") of the sorted ``ordered``: numpy's own
    index and interpolation arithmetic, without its partition of the whole array on every call."""
    import numpy as np

    n = len(ordered)
    index = (n - 1) * quantiles  # numpy's virtual index for "linear"
    below = np.floor(index)
    gamma = index - below
    below = below.astype(np.intp)
    above = below + 1
    last = index >= n - 1
    below[last], above[last] = n - 1, n - 1
    a, b = ordered[below], ordered[above]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)  # numpy's _lerp


def _inverted_cdf(ordered: Any, quantiles: Any) -> Any:
    """``numpy.quantile(values, quantiles, method="inverted_cdf")`` of the sorted ``ordered``."""
    import numpy as np

    index = len(ordered) * np.asarray(quantiles) - 1
    below = np.floor(index)
    chosen = np.where(index - below == 0, below, below + 1).astype(np.intp)
    return ordered[np.clip(chosen, 0, len(ordered) - 1)]
