"""Measurements taken the same way for Fjord and its peers (numpy and pyarrow only: Feast's venv imports
this module too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa


def measure(
    single: Callable[[int], Any], batch: Callable[[list[int]], Any], keys: np.ndarray
) -> dict[str, float]:
    """p50/p99 of ``single(key)`` over ``keys`` and p99 of ``batch(100 keys)`` over len(keys)/10 batches."""
    for key in keys[:50]:  # warm the connection
        single(int(key))
    singles = []
    for key in keys:
        start = time.perf_counter()
        single(int(key))
        singles.append(time.perf_counter() - start)
    batches = []
    for i in range(len(keys) // 10):
        chunk = [int(k) for k in keys[(i * 100) % len(keys) :][:100]]
        start = time.perf_counter()
        batch(chunk)
        batches.append(time.perf_counter() - start)
    return {
        "single_p50_ms": float(np.percentile(singles, 50) * 1e3),
        "single_p99_ms": float(np.percentile(singles, 99) * 1e3),
        "batch100_p99_ms": float(np.percentile(batches, 99) * 1e3),
    }


def retrieve_twice(retrieve: Callable[[], Any]) -> tuple[Any, float, float]:
    """The same retrieval twice in one process: (result, cold seconds, warm seconds). Both stores get
    the same warm-up (their first call imports, plans and opens files; the second is the steady state)."""
    start = time.perf_counter()
    retrieve()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    table = retrieve()
    return table, cold, time.perf_counter() - start


def retrieval_summary(table: pa.Table, cold: float, warm: float, peak_rss_mb: float) -> dict[str, Any]:
    """Times, memory and a fingerprint of a training-data result (rows, and the sum and nulls of every
    feature column), so the two stores' answers can be checked to agree on every feature."""
    features: dict[str, list[float]] = {}
    for name in table.column_names:
        if name[:1] in ("a", "b") and name[1:].isdigit():
            values = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
            features[name] = [float(np.nansum(values)), int(np.isnan(values).sum())]
    return {
        "seconds": warm,
        "cold_seconds": cold,
        "rows": table.num_rows,
        "features": features,
        "peak_rss_mb": peak_rss_mb,
    }


def disagreements(ours: dict[str, Any], peer: dict[str, Any]) -> list[str]:
    """The features (and the row count) on which two retrieval summaries differ."""
    wrong = [] if ours["rows"] == peer["rows"] else ["rows"]
    if set(ours["features"]) != set(peer["features"]):
        return [*wrong, "feature columns"]
    for name, (total, nulls) in ours["features"].items():
        peer_total, peer_nulls = peer["features"][name]
        if nulls != peer_nulls or abs(total - peer_total) > 1e-6 * max(1.0, abs(peer_total)):
            wrong.append(name)
    return wrong
