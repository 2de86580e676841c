"""The server's Prometheus metrics, under TF Serving's names where TF Serving has the metric.

``:tensorflow:serving:request_count{model_name,status}`` and
``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (microseconds) are TF Serving's, so
its dashboards work unchanged; ``fjord_serving_*`` are ours: batch sizes, queue depth, inference log
records sent and dropped, and online feature lookups. The exposition is written here rather than by
prometheus_client, whose counters append ``_total`` to every name (TF Serving's do not).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

LATENCY_BUCKETS_US = [10 * 1.8**i for i in range(33)]  # TF Serving: exponential buckets from 10 us
SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def _labels(values: dict[str, Any]) -> str:
    if not values:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in values.items())  # fmt: skip
    return "{" + inner + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def _head(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[tuple[tuple[str, Any], ...], float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        key = tuple(labels.items())
        with self._lock:
            self._values[key] += amount

    def value(self, **labels: Any) -> float:
        return self._values.get(tuple(labels.items()), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = list(self._values.items())
        return [*self._head(), *(f"{self.name}{_labels(dict(k))} {v:g}" for k, v in items)]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: Any) -> None:
        with self._lock:
            self._values[tuple(labels.items())] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: list[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = buckets
        self._series: dict[tuple[tuple[str, Any], ...], list[float]] = {}

    def observe(self, value: float, **labels: Any) -> None:
        key = tuple(labels.items())
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)  # buckets, sum, count
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
                    break
            series[-2] += value
            series[-1] += 1

    def lines(self) -> list[str]:
        out = self._head()
        with self._lock:
            items = [(k, list(v)) for k, v in self._series.items()]
        for key, series in items:
            labels = dict(key)
            running = 0.0
            for bound, count in zip(self.buckets, series, strict=False):
                running += count
                out.append(f"{self.name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {running:g}")
            out.append(f"{self.name}_bucket{_labels({**labels, 'le': '+Inf'})} {series[-1]:g}")
            out.append(f"{self.name}_sum{_labels(labels)} {series[-2]:g}")
            out.append(f"{self.name}_count{_labels(labels)} {series[-1]:g}")
        return out


class Metrics:
    """Every metric the server keeps."""

    def __init__(self) -> None:
        self.request_count = Counter(":tensorflow:serving:request_count", "The total number of requests.")
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            LATENCY_BUCKETS_US,
        )
        self.batch_size = Histogram(
            "fjord_serving_batch_size", "Rows per batch the model ran (after padding).", SIZE_BUCKETS
        )
        self.queue_depth = Gauge("fjord_serving_queue_depth", "Rows waiting in the batching queues.")
        self.log_sent = Counter(
            "fjord_serving_inference_log_sent", "Inference log records the broker acknowledged."
        )
        self.log_dropped = Counter(
            "fjord_serving_inference_log_dropped",
            "Inference log records dropped (queue full, broker unreachable or refusing).",
        )
        self.feature_lookup_latency = Histogram(
            "fjord_serving_feature_lookup_latency",
            "Wall time (in microseconds) of the online feature lookups of a request.",
            LATENCY_BUCKETS_US,
        )
        self.input_violations = Counter(
            "fjord_serving_input_violations",
            "Input-rule violations of the requests served under --input_rules_mode=flag.",
        )
        self.shadow_requests = Counter(
            "fjord_serving_shadow_requests",
            "Calls the shadow version scored after the answer was sent, by status.",
        )
        self.shadow_skipped = Counter(
            "fjord_serving_shadow_skipped",
            "Calls the shadow did not score because too many shadow scorings were waiting.",
        )
        self.canary_fallbacks = Counter(
            "fjord_serving_canary_fallbacks",
            "Calls routed to the canary that it failed, answered by the stable version instead.",
        )

    def exposition(self) -> str:
        metrics = [
            self.request_count,
            self.request_latency,
            self.batch_size,
            self.queue_depth,
            self.log_sent,
            self.log_dropped,
            self.feature_lookup_latency,
            self.input_violations,
            self.shadow_requests,
            self.shadow_skipped,
            self.canary_fallbacks,
        ]
        return "\n".join(line for metric in metrics for line in metric.lines()) + "\n"
