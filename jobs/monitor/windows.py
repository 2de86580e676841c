"""A window's metrics as mergeable counters, and what they say once summarised.

The monitor's Spark job turns every micro-batch into rows ``(model, version, window, metric, key, n,
sum, min, max)``: the window's counters (listed below). Counters add up, so a window's state is
the sum over the micro-batches that saw it, whatever their number or order, and it is small
(a few hundred counters) however many records the window holds. :func:`summarise` turns the counters
into the metrics people read: throughput, error rate, latency percentiles, the prediction
distribution, per-feature missing rates and drift scores.

The metrics counted, and what a row's key, n, sum, min and max mean for each:

- ``events``: records in the window (n), their first and last event times (min, max, in ms);
- ``requests``: response records, the calls answered (n);
- ``errors``: response records with an HTTP status of 400 or more (n);
- ``latency``: key is the latency's log bucket (8 per doubling of ms); n, sum, min, max;
- ``prediction``: key is the score's bin, 20 over [0, 1]; n, sum;
- ``score``: key is the score's bin, 1,000 over [0, 1]; n, sum (performance estimated without labels,
  fjord/evaluation.py);
- ``positive``: predictions at or above the positive threshold (n);
- ``inputs``: request records (n) and their rows (sum);
- ``late``: records that arrived after the window closed, not counted in it (n);
- ``violations``: key is a request field; input-rule violations of flagged requests (n);
- ``f:<feature>``: key is a numeric value's grid bin, or the category, or ``null``; n, sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.monitor import drift

LATENCY_BUCKETS_PER_DOUBLING = 8
PREDICTION_BINS = 20


@dataclass
class Counter:
    n: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, n: int, total: float | None, low: float | None, high: float | None) -> None:
        self.n += int(n)
        self.sum += float(total or 0.0)
        if low is not None:
            self.min = min(self.min, float(low))
        if high is not None:
            self.max = max(self.max, float(high))


@dataclass
class Window:
    """The counters of one (model, version, window)."""

    model: str
    version: int
    start_ms: int
    counters: dict[tuple[str, str], Counter] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int]:
        return self.model, self.version, self.start_ms

    def add(
        self, metric: str, key: str, n: int, total: float | None, low: float | None, high: float | None
    ) -> None:
        self.counters.setdefault((metric, key), Counter()).add(n, total, low, high)

    def n(self, metric: str, key: str = "") -> int:
        counter = self.counters.get((metric, key))
        return counter.n if counter else 0

    def of(self, metric: str) -> dict[str, Counter]:
        return {k: c for (m, k), c in self.counters.items() if m == metric}

    @property
    def max_event_ms(self) -> int:
        counter = self.counters.get(("events", ""))
        return int(counter.max) if counter and counter.n and counter.max != -math.inf else self.start_ms

    def to_state(self) -> list[list[Any]]:
        """JSON-ready counters (the results table stores them, so a restart resumes the window)."""
        return [
            [m, k, c.n, c.sum, None if c.min == math.inf else c.min, None if c.max == -math.inf else c.max]
            for (m, k), c in sorted(self.counters.items())
        ]

    @classmethod
    def from_state(cls, model: str, version: int, start_ms: int, state: Iterable[list[Any]]) -> Window:
        window = cls(model, version, start_ms)
        for metric, key, n, total, low, high in state:
            window.add(metric, key, n, total, low, high)
        return window


@dataclass(frozen=True)
class Thresholds:
    psi: float = drift.PSI_THRESHOLD
    wasserstein: float = drift.WASSERSTEIN_THRESHOLD
    js: float = drift.JS_THRESHOLD
    numeric_test: str = "psi"  # the score that decides a numeric feature's drift: psi or wasserstein
    drift_share: float = 0.5
    min_rows: int = 500
    error_rate: float = 0.05


def latency_bucket_ms(bucket: int) -> float:
    """The middle (geometric) of a latency bucket, in milliseconds."""
    return 2 ** ((bucket + 0.5) / LATENCY_BUCKETS_PER_DOUBLING) / 1000


def _percentile(buckets: Mapping[str, Counter], q: float, low: float, high: float) -> float | None:
    total = sum(c.n for c in buckets.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(buckets, key=int):
        seen += buckets[bucket].n
        if seen >= q * total:
            return min(max(latency_bucket_ms(int(bucket)), low), high)
    return high


def estimated(
    window: Window, card: Mapping[str, Any] | None, default_threshold: float
) -> dict[str, Any] | None:
    """CBPE's estimate of the window's performance at the version's serving threshold (its card's),
    flagged with whether the version's scores were found calibrated when it was registered."""
    import numpy as np

    from fjord.evaluation import estimate

    bins = window.of("score")
    if not bins:
        return None
    metrics = (card or {}).get("metrics") or {}
    threshold = float(metrics.get("threshold", default_threshold))
    counters = list(bins.values())
    found = estimate(
        np.array([c.n for c in counters], "float64"), np.array([c.sum for c in counters]), threshold
    )
    calibration = (card or {}).get("calibration") or {}
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in found.items()}
    return {**finite, "threshold": threshold, "calibrated": calibration.get("calibrated"),
            "blessed_roc_auc": metrics.get("roc_auc")}  # fmt: skip


def summarise(
    window: Window,
    reference: Mapping[str, Any] | None,
    thresholds: Thresholds,
    card: Mapping[str, Any] | None = None,
    positive_threshold: float = 0.5,
) -> dict[str, Any]:
    """The window's metrics: what the results table, the topic and the dashboard show."""
    requests, errors = window.n("requests"), window.n("errors")
    latency = window.of("latency")
    low = min((c.min for c in latency.values()), default=0.0)
    high = max((c.max for c in latency.values()), default=0.0)
    predictions = window.of("prediction")
    scored = sum(c.n for c in predictions.values())
    rows = int(window.counters.get(("inputs", ""), Counter()).sum)
    out: dict[str, Any] = {
        "records": window.n("events"),
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "latency_p50_ms": _percentile(latency, 0.50, low, high),
        "latency_p95_ms": _percentile(latency, 0.95, low, high),
        "latency_p99_ms": _percentile(latency, 0.99, low, high),
        "latency_mean_ms": sum(c.sum for c in latency.values()) / requests if latency and requests else None,
        "predictions": scored,
        "positive_rate": window.n("positive") / scored if scored else None,
        "prediction_mean": sum(c.sum for c in predictions.values()) / scored if scored else None,
        "prediction_histogram": [
            predictions[str(b)].n if str(b) in predictions else 0 for b in range(PREDICTION_BINS)
        ],
        "rows": rows,
        "late": window.n("late"),
        "input_violations": sum(c.n for c in window.of("violations").values()),
        "violations_by_field": {k: c.n for k, c in sorted(window.of("violations").items())},
        "estimated": estimated(window, card, positive_threshold),
        "features": {},
        "drift_share": None,
        "drift": False,
        "drifted_features": [],
    }
    if reference is None:
        return out
    tested = 0
    for name, ref in reference["features"].items():
        counters = window.of(f"f:{name}")
        if not counters:
            continue
        missing = counters.get("null", Counter()).n
        seen = sum(c.n for c in counters.values())
        values = {k: c for k, c in counters.items() if k != "null"}
        scores = _scores(ref, values) if sum(c.n for c in values.values()) >= thresholds.min_rows else {}
        test = "js" if ref.get("kind") == "categorical" else thresholds.numeric_test
        drifted = test in scores and scores[test] >= getattr(thresholds, test)
        tested += bool(scores)
        out["features"][name] = {"count": seen, "missing_rate": missing / seen if seen else None, **scores,
                                 "test": test, "drifted": drifted}  # fmt: skip
        if drifted:
            out["drifted_features"].append(name)
    if tested:
        out["drift_share"] = len(out["drifted_features"]) / tested
        out["drift"] = out["drift_share"] >= thresholds.drift_share
    return out


def _scores(reference: Mapping[str, Any], values: Mapping[str, Counter]) -> dict[str, float]:
    if reference.get("kind") == "categorical":
        return {"js": drift.jensen_shannon(reference["frequencies"], {k: c.n for k, c in values.items()})}
    if not reference.get("edges"):
        return {}
    counts = {int(k): c.n for k, c in values.items()}
    sums = {int(k): c.sum for k, c in values.items()}
    return {
        "psi": drift.psi(reference["psi_counts"], drift.psi_bin_counts(reference, counts)),
        "wasserstein": drift.wasserstein_norm(reference, counts, sums),
    }
