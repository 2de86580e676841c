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


def retrieval_summary(table: pa.Table, seconds: float, peak_rss_mb: float) -> dict[str, float]:
    """Time, memory and a fingerprint of a training-data result (rows, sum and nulls of ``a0``), so the
    two stores' answers can be checked to agree."""
    a0 = table.column("a0").to_numpy(zero_copy_only=False)
    return {
        "seconds": seconds,
        "rows": table.num_rows,
        "a0_sum": float(np.nansum(a0)),
        "a0_nulls": int(np.isnan(a0).sum()),
        "peak_rss_mb": peak_rss_mb,
    }
