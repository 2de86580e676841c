"""Training/serving skew, row by row: the inputs a model received, against the features the ETL
later computed for the same transaction.

``run(SkewSpec(project="fraud"))``, a task after the ETL in ``fraud_training_pipeline`` (and
``fjord monitor skew --refresh``):

1. reads the archived requests of the last ``lookback_days`` (:mod:`jobs.monitor.archive`): each
   served row's model inputs as the server logged them, after the online lookup and the transformer,
   with its passthrough key (``tid``);
2. reads the same keys' features through the feature view the model trains on (``fraud_demo``:
   ``get_batch_data`` at the groups' latest commits, point in time, as a training set would hold them);
3. per model version, request-time window and feature, counts the rows whose served value differs
   from the offline one beyond ``atol + rtol * |offline|`` (a value missing on one side only counts as
   beyond), the mean and largest absolute difference, and keeps the worst rows by inference id;
4. writes one row per (model, version, window, feature) to ``Resources/monitoring/<model>/skew``
   (Delta, replaced by key: a rerun writes the same rows, a late batch updates its window);
5. when a feature's share beyond tolerance exceeds ``max_share`` over at least ``min_rows`` joined
   rows, raises an alert, posts it once on ``fjord://skew/<project>/<model>``, and marks the drift
   alerts of the same version and window as suspect (``suspect/``): a drift measured on skewed inputs
   may be the skew, and retraining on it would bake the bug in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from fjord.airflow.client import skew_asset
from fjord.errors import FjordError
from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.progress import progress
from fjord.projects import get_project
from jobs.features.job import ensure_view
from jobs.monitor import alerts as alerting
from jobs.monitor.archive import InferenceArchive, key_text, requests
from jobs.monitor.store import MonitorStore

log = logging.getLogger("fjord.skew")
_CODE = [__file__]

SKEW_SCHEMA = pa.schema(
    [
        ("model", pa.string()), ("version", pa.int64()), ("feature", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
        ("rows", pa.int64()), ("beyond", pa.int64()), ("share", pa.float64()),
        ("mean_abs_diff", pa.float64()), ("max_abs_diff", pa.float64()),
        ("missing_served", pa.int64()), ("missing_offline", pa.int64()), ("worst", pa.string()),
        ("view", pa.string()), ("commits", pa.string()), ("run_id", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)  # fmt: skip
SUSPECT_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()), ("skew_alert_id", pa.string()), ("features", pa.string()),
        ("marked_at", pa.timestamp("us", tz="UTC")),
    ]
)  # fmt: skip


class SkewError(FjordError):
    """The served inputs cannot be compared with the view as specified (no key, no common feature)."""

    exit_code = 2


class SkewSpec(JobSpec):
    project: str
    model_name: str = Field(default="fraud", description="the serving whose inputs are checked")
    view: str = Field(default="fraud_demo", description="the feature view the model trains on")
    view_version: int = Field(default=1, ge=1)
    key: str = Field(default="tid", description="the passthrough field that is the view's row key")
    window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400, description="request-time windows")
    lookback_days: int = Field(default=30, ge=1, le=3_650, description="archived requests checked")
    rtol: float = Field(default=1e-4, ge=0, le=1, description="relative tolerance of a served value")
    atol: float = Field(default=1e-6, ge=0, description="absolute tolerance of a served value")
    max_share: float = Field(default=0.01, ge=0, le=1, description="share beyond tolerance that alerts")
    min_rows: int = Field(default=50, ge=1, description="joined rows a window needs to raise an alert")
    worst: int = Field(default=5, ge=0, le=100, description="worst rows kept per feature and window")
    notify_airflow: bool = True
    asset_uri: str | None = Field(default=None, description="default: fjord://skew/<project>/<model>")


@dataclass
class SkewResult:
    run_id: str
    model: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    joined: int = 0
    suspect: list[str] = field(default_factory=list)
    table: str = ""

    def summary(self) -> str:
        head = (f"{self.model}: {self.joined:,} of {self.requests:,} archived rows matched their offline "
                f"features; {len(self.alerts)} skew alert(s)")  # fmt: skip
        alerts = [f"  ALERT {a['message']}" for a in self.alerts]
        return "\n".join([head, *report_lines(self.rows)[:15], *alerts])


def report_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The latest window of each version, one line per feature, worst first: what ``fjord run`` and
    ``fjord monitor skew`` print."""
    latest: dict[int, Any] = {}
    for r in rows:
        latest[r["version"]] = max(latest.get(r["version"], r["window_start"]), r["window_start"])
    lines = []
    for version, start in sorted(latest.items()):
        shown = sorted((r for r in rows if r["version"] == version and r["window_start"] == start),
                       key=lambda r: (-r["share"], r["feature"]))  # fmt: skip
        lines.append(f"v{version} {start:%Y-%m-%d %H:%M}: {shown[0]['rows']:,} rows")
        for r in shown:
            worst = r["worst"][0] if r["worst"] else None
            where = ""
            if worst and r["beyond"]:
                where = (f"; worst {worst['inference_id'][:12]} served {worst['served']} "
                         f"offline {worst['offline']}")  # fmt: skip
            lines.append(f"  {r['feature']:<18} {r['share']:7.2%} beyond tolerance, mean |diff| "
                         f"{r['mean_abs_diff']:.4g}{where}")  # fmt: skip
    return lines


def _number(values: Any) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy("float64")


def compare(
    served: np.ndarray, offline: np.ndarray, rtol: float, atol: float
) -> tuple[np.ndarray, np.ndarray]:
    """(beyond tolerance, |difference|) per row. Both missing: equal; one missing: beyond, difference
    NaN (it enters no mean)."""
    both_missing = np.isnan(served) & np.isnan(offline)
    one_missing = np.isnan(served) ^ np.isnan(offline)
    diff = np.abs(served - offline)
    with np.errstate(invalid="ignore"):
        beyond = one_missing | (~both_missing & (diff > atol + rtol * np.abs(offline)))
    return beyond, np.where(both_missing, 0.0, diff)


def _offline(spec: SkewSpec, keys: set[str]) -> tuple[Any, list[str], dict[str, int], str]:
    """The view's features of ``keys`` (pandas, indexed by key text), its feature names, the commits
    read and the view's reference."""
    view = ensure_view(spec.project, f"{spec.view}/{spec.view_version}")
    commits = view.latest_commits()
    frame = view.get_batch_data(commits=commits)
    if spec.key not in frame.columns:
        raise SkewError(f"feature view {spec.view} v{spec.view_version} has no column {spec.key!r}",
                        hint=f"its columns: {', '.join(frame.columns)}")  # fmt: skip
    frame = frame.assign(_key=frame[spec.key].map(key_text))
    frame = frame[frame["_key"].isin(keys)].drop_duplicates("_key", keep="last").set_index("_key")
    return frame, list(view.features), commits, f"{spec.view}/{spec.view_version}"


def _skew_rows(spec: SkewSpec, joined: Any, features: list[str], view: str, commits: dict[str, int],
               run_id: str) -> list[dict[str, Any]]:  # fmt: skip
    import pandas as pd

    window = pd.Timedelta(seconds=spec.window_seconds)
    epoch = pd.Timestamp(0, tz="UTC")
    joined = joined.assign(window_start=epoch + ((joined["request_time"] - epoch) // window) * window)
    rows, now = [], datetime.now(UTC)
    for (version, start), group in joined.groupby(["version", "window_start"], sort=True):
        for name in features:
            served, offline = _number(group[f"inputs.{name}"]), _number(group[name])
            beyond, diff = compare(served, offline, spec.rtol, spec.atol)
            order = np.argsort(-np.where(np.isnan(diff), np.inf, diff), kind="stable")
            worst = [
                {"inference_id": group["inference_id"].iat[i], "row": int(group["row"].iat[i]),
                 spec.key: group["_key"].iat[i], "served": _plain(served[i]), "offline": _plain(offline[i])}
                for i in order[: spec.worst] if beyond[i]
            ]  # fmt: skip
            finite = diff[~np.isnan(diff)]
            rows.append({
                "model": spec.model_name, "version": int(version), "feature": name,
                "window_start": start.to_pydatetime(), "window_end": (start + window).to_pydatetime(),
                "rows": len(group), "beyond": int(beyond.sum()), "share": float(beyond.mean()),
                "mean_abs_diff": float(finite.mean()) if finite.size else 0.0,
                "max_abs_diff": float(finite.max()) if finite.size else 0.0,
                "missing_served": int((np.isnan(served) & ~np.isnan(offline)).sum()),
                "missing_offline": int((np.isnan(offline) & ~np.isnan(served)).sum()),
                "worst": worst, "view": view, "commits": json.dumps(commits, sort_keys=True),
                "run_id": run_id, "updated_at": now,
            })  # fmt: skip
    return rows


def _plain(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _findings(spec: SkewSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An alert per (version, window) where a feature's share beyond tolerance exceeds ``max_share``."""
    by_window: dict[tuple[int, datetime], list[dict[str, Any]]] = {}
    for r in rows:
        if r["rows"] >= spec.min_rows and r["share"] > spec.max_share:
            by_window.setdefault((r["version"], r["window_start"]), []).append(r)
    found = []
    for (version, start), skewed in sorted(by_window.items()):
        skewed.sort(key=lambda r: -r["share"])
        names = ", ".join(f"{r['feature']} {r['share']:.1%}" for r in skewed)
        found.append({
            "alert_id": f"{spec.model_name}/{version}/{int(start.timestamp() * 1000)}/skew",
            "model": spec.model_name, "version": version, "window_start": start, "kind": "skew",
            "message": f"{spec.model_name} v{version}: served inputs differ from the offline features beyond "
                       f"tolerance in {len(skewed)} feature(s) over {skewed[0]['rows']:,} rows: {names} "
                       f"(> {spec.max_share:.1%})",
            "detail": json.dumps({"features": {r["feature"]: r["share"] for r in skewed},
                                  "rows": skewed[0]["rows"], "max_share": spec.max_share,
                                  "window_end": skewed[0]["window_end"].isoformat()}),
            "state": "pending", "event_id": None, "dag_run_id": None, "created_at": datetime.now(UTC),
            "posted_at": None,
        })  # fmt: skip
    return found


def _suspects(skew_alerts: list[dict[str, Any]], drift_alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A suspect mark for each drift alert of a skewed (version, window)."""
    marks = []
    for skew in skew_alerts:
        detail = skew["detail"] if isinstance(skew["detail"], dict) else json.loads(skew["detail"])
        end = datetime.fromisoformat(detail["window_end"])
        for drift in drift_alerts:
            if (
                drift["kind"] == "drift"
                and drift["version"] == skew["version"]
                and (skew["window_start"] <= drift["window_start"] < end)
            ):
                marks.append({"alert_id": drift["alert_id"], "skew_alert_id": skew["alert_id"],
                              "features": json.dumps(detail["features"]),
                              "marked_at": datetime.now(UTC)})  # fmt: skip
    return marks


def run(spec: SkewSpec) -> SkewResult:
    """Compare, store, alert, mark; see the module docstring."""
    project = get_project(spec.project)
    archive = InferenceArchive(project.fs, spec.model_name)
    store = MonitorStore(project.fs, spec.model_name)
    with track_run(project, "skew", params=spec.model_dump(mode="json"), code=_CODE,
                   **spec.run_tree()) as record:  # fmt: skip
        table = archive.table()
        archive_version = table.version() if table is not None else None
        since = datetime.now(UTC) - timedelta(days=spec.lookback_days)
        served = requests(archive, since, as_of=archive_version)
        total = len(served)
        if spec.key in served.columns:
            served = served.assign(_key=served[spec.key].map(key_text)).dropna(subset=["_key"])
        else:  # no call carried the key (or none was archived yet): nothing joins
            served = served.iloc[0:0].assign(_key=None)
        served = served.astype({"_key": object})
        offline, features, commits, view = _offline(spec, set(served["_key"]))
        compared = [f for f in features if f"inputs.{f}" in served.columns]
        if len(served) and not compared:
            raise SkewError(f"no model input of {spec.model_name}'s archived requests is a feature of "
                            f"view {view}", hint=f"the view's features: {', '.join(features)}")  # fmt: skip
        joined = served.join(offline[compared], on="_key", how="inner")
        progress(f"skew: {len(joined):,} of {total:,} archived rows since {since:%Y-%m-%d} matched "
                 f"{view}'s features ({len(compared)} compared)")  # fmt: skip
        for ref, commit in commits.items():
            record.add_input(ref, str(commit), kind="feature_group")
        if archive_version is not None:
            record.add_input(archive.uri, str(archive_version), kind="inference_archive")
        rows = _skew_rows(spec, joined, compared, view, commits, record.run_id) if len(joined) else []
        store.upsert("skew", rows, ("model", "version", "window_start", "feature"), SKEW_SCHEMA)
        crash_point("skew.measured")  # a kill here: the rerun measures the same, then alerts
        fresh = alerting.record_new(store, "skew_alerts", _findings(spec, rows))
        marks = _suspects(store.alerts_of("skew_alerts"), store.alerts())
        marked = {m["alert_id"] for m in store.suspects()}
        fresh_marks = [m for m in marks if m["alert_id"] not in marked]
        store.upsert("suspect", fresh_marks, ("alert_id",), SUSPECT_SCHEMA)
        if spec.notify_airflow:
            asset = spec.asset_uri or skew_asset(spec.project, spec.model_name)
            alerting.deliver_stored(store, "skew_alerts", asset)
        record.add_output(store.uri("skew"), kind="skew")
        return SkewResult(
            run_id=record.run_id, model=spec.model_name, rows=store.skew(), alerts=fresh, requests=total,
            joined=len(joined), suspect=sorted({m["alert_id"] for m in marks}), table=store.uri("skew"),
        )  # fmt: skip
