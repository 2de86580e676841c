"""Window counters: merging in any order, the metrics they summarise to, alerts and their cool-down."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from featurestore.statistics import reference_statistics
from jobs.monitor import alerts, drift
from jobs.monitor.windows import Thresholds, Window, latency_bucket_ms, summarise

RNG = np.random.default_rng(2)
REFERENCE = reference_statistics(
    pa.table({"x": RNG.normal(0, 1, 5_000), "c": RNG.choice(["a", "b"], 5_000)}), ["x", "c"]
)


def _window(x: np.ndarray, categories: list[str], latencies: list[float], errors: int = 0) -> Window:
    w = Window("m", 1, 0)
    w.add("events", "", len(latencies) * 2, 0, 1_000, 9_000)
    w.add("requests", "", len(latencies), 0, None, None)
    w.add("errors", "", errors, 0, None, None)
    for ms in latencies:
        bucket = int(np.floor(8 * np.log2(ms * 1000)))
        w.add("latency", str(bucket), 1, ms, ms, ms)
    bins = drift.grid_bin(REFERENCE["features"]["x"]["edges"], x)
    for b in np.unique(bins):
        w.add("f:x", str(b), int((bins == b).sum()), float(x[bins == b].sum()), None, None)
    w.add("f:x", "null", 3, 0, None, None)
    for c in set(categories):
        w.add("f:c", c, categories.count(c), 0, None, None)
    return w


def test_counters_merge_in_any_order_and_survive_their_state() -> None:
    a, b = (
        _window(RNG.normal(0, 1, 300), ["a"] * 300, [1.0] * 10),
        _window(RNG.normal(0, 1, 300), ["b"] * 300, [2.0]),
    )
    merged = Window.from_state("m", 1, 0, a.to_state())
    for metric, key, n, total, low, high in b.to_state():
        merged.add(metric, key, n, total, low, high)
    other = Window.from_state("m", 1, 0, b.to_state())
    for metric, key, n, total, low, high in a.to_state():
        other.add(metric, key, n, total, low, high)
    assert merged.to_state() == other.to_state() and merged.max_event_ms == 9_000
    assert merged.n("requests") == 11 and merged.of("f:x")["null"].n == 6


def test_summary_scores_drift_only_with_enough_values() -> None:
    same = summarise(_window(RNG.normal(0, 1, 2_000), ["a", "b"] * 1_000, [1.0, 2.0, 50.0]), REFERENCE,
                     Thresholds())  # fmt: skip
    assert same["drift"] is False and same["features"]["x"]["psi"] < 0.05
    assert same["features"]["x"]["missing_rate"] == pytest.approx(3 / 2_003)
    assert same["latency_p50_ms"] == pytest.approx(2.0, rel=0.05)  # bucket resolution: 9 %
    assert same["latency_p99_ms"] == pytest.approx(50.0, rel=0.05)
    shifted = summarise(_window(RNG.normal(1.5, 1, 2_000), ["b"] * 2_000, [1.0], errors=1), REFERENCE,
                        Thresholds())  # fmt: skip
    assert shifted["drift"] is True and set(shifted["drifted_features"]) == {"x", "c"}
    assert shifted["features"]["c"]["test"] == "js" and shifted["error_rate"] == 1.0
    few = summarise(_window(RNG.normal(3, 1, 100), ["b"] * 100, [1.0]), REFERENCE, Thresholds(min_rows=500))
    assert few["drift_share"] is None and "psi" not in few["features"]["x"]
    assert summarise(_window(RNG.normal(0, 1, 10), ["a"], [1.0]), None, Thresholds())["features"] == {}


def test_latency_buckets_are_eight_per_doubling() -> None:
    assert latency_bucket_ms(79) == pytest.approx(1.0, rel=0.05)
    assert latency_bucket_ms(87) / latency_bucket_ms(79) == pytest.approx(2.0)


def _summary(drifted: bool, error_rate: float = 0.0) -> dict:
    features = {"x": {"psi": 0.5 if drifted else 0.01, "drifted": drifted, "test": "psi"}}
    return {"drift": drifted, "drift_share": 1.0 if drifted else 0.0, "features": features,
            "error_rate": error_rate, "requests": 100, "errors": int(100 * error_rate)}  # fmt: skip


def test_a_sustained_drift_starts_one_run_per_cool_down() -> None:
    t0 = datetime(2026, 12, 3, tzinfo=UTC)
    earlier: list[dict] = []
    states = []
    for minute in range(0, 180, 30):
        start = t0 + timedelta(minutes=minute)
        found = alerts.new_alerts("m", 1, start, start + timedelta(minutes=1), _summary(True), Thresholds(),
                                  earlier, timedelta(hours=1))  # fmt: skip
        earlier += found
        states.append(found[0]["state"])
    assert states == ["pending", "suppressed", "pending", "suppressed", "pending", "suppressed"]
    assert len({a["alert_id"] for a in earlier}) == 6  # deterministic ids: a replay rewrites the same rows
    quiet = alerts.new_alerts("m", 1, t0, t0, _summary(False, error_rate=0.2), Thresholds(), [], timedelta(0))
    assert [a["kind"] for a in quiet] == ["error_rate"] and "20.0%" in quiet[0]["message"]
    extra = alerts.event_extra({**earlier[0], "detail": earlier[0]["detail"]})
    assert extra["alert_id"] == earlier[0]["alert_id"] and extra["window_end"].startswith("2026-12-03T00:01")


def test_an_unreachable_airflow_leaves_alerts_pending(monkeypatch) -> None:
    """The error path of the Airflow boundary: nothing raised, nothing marked posted."""
    monkeypatch.setenv("FJORD_AIRFLOW__API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FJORD_AIRFLOW__PASSWORD", "x")
    from fjord.config import reset_settings

    reset_settings()
    start = datetime(2026, 12, 3, tzinfo=UTC)
    pending = alerts.new_alerts("m", 1, start, start, _summary(True), Thresholds(), [], timedelta(0))
    assert alerts.AirflowNotifier("fjord://drift/m").deliver(pending) == []
    reset_settings()


def test_input_rule_violations_sum_up_by_field() -> None:
    w = _window(RNG.normal(0, 1, 10), ["a"], [1.0])
    w.add("violations", "amount", 3, 0, None, None)
    w.add("violations", "category", 1, 0, None, None)
    out = summarise(w, REFERENCE, Thresholds())
    assert out["input_violations"] == 4 and out["violations_by_field"] == {"amount": 3, "category": 1}
    assert summarise(_window(RNG.normal(0, 1, 10), ["a"], [1.0]), None, Thresholds())["input_violations"] == 0


def test_a_windows_table_older_than_the_violation_columns_takes_them_at_its_next_write(tmp_path) -> None:
    """A monitor upgraded in place: its table has no violation columns; reads fill them in as None,
    and the next window written adds them (Delta schema evolution), keeping the old rows."""
    from fjord.fs import SharedFS
    from jobs.monitor.store import WINDOW_SCHEMA, MonitorStore

    store = MonitorStore(SharedFS(tmp_path.as_uri()), "m")
    old = pa.schema([f for f in WINDOW_SCHEMA if f.name not in ("input_violations", "violations_by_field")])
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def row(minute: int, **extra) -> dict:
        begins = start + timedelta(minutes=minute)
        ends = begins + timedelta(minutes=1)
        return {"model": "m", "version": 1, "window_start": begins, "window_end": ends, "final": True,
                "requests": 5, **extra}  # fmt: skip

    store.upsert("windows", [row(0)], ("model", "version", "window_start"), old)
    assert store.windows()[0]["input_violations"] is None
    store.upsert("windows", [row(1, input_violations=2, violations_by_field={"amount": 2})],
                 ("model", "version", "window_start"), WINDOW_SCHEMA)  # fmt: skip
    first, second = store.windows()
    assert (first["requests"], first["input_violations"]) == (5, None)
    assert second["input_violations"] == 2 and second["violations_by_field"] == {"amount": 2}
