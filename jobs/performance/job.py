"""Realized performance: the labels the ETL published, joined with the predictions the archive kept.

``run(PerformanceSpec(project="fraud"))``, a task after the ETL in ``fraud_training_pipeline`` (and
``fjord monitor performance --refresh``):

1. reads the served predictions of the last ``lookback_days`` from the inference archive
   (:mod:`jobs.monitor.archive`), each with its passthrough key (``tid``), and the labels group at
   its latest commit (``fraud_labels``: ``tid`` -> ``is_fraud``), through the feature store's API;
2. joins them by key, and per model version and event-time window (the request's time, a day by
   default) computes the realized metrics of the labelled rows (fjord/evaluation.py: ROC AUC, PR AUC,
   precision and recall at the version's serving threshold, Brier score, calibration bins, counts)
   beside CBPE's estimate over every prediction of the window and the estimate's error;
3. writes one row per (model, version, window) to ``Resources/monitoring/<model>/performance``
   (Delta, replaced by key in one commit). Each row is computed from all the window's joined rows, so
   a rerun writes the same rows and a label that lands late updates its older window: nothing is
   counted twice;
4. raises an alert when a window's realized ROC AUC is below the version's blessed test AUC minus
   ``tolerance`` over at least ``min_rows`` labelled rows, and posts it once on the Airflow asset
   ``fjord://performance/<project>/<model>``, which starts ``fraud_retrain`` as drift does.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

import featurestore
from fjord.airflow.client import performance_asset
from fjord.errors import FjordError
from fjord.evaluation import estimate, histogram, realized
from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.progress import progress
from fjord.projects import get_project
from jobs.monitor import alerts as alerting
from jobs.monitor.archive import InferenceArchive, key_text, predictions
from jobs.monitor.reference import load_card
from jobs.monitor.store import MonitorStore

log = logging.getLogger("fjord.performance")
_CODE = [__file__]

PERFORMANCE_SCHEMA = pa.schema(
    [
        ("model", pa.string()), ("version", pa.int64()),
        ("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
        ("predictions", pa.int64()), ("labelled_rows", pa.int64()), ("positives", pa.int64()),
        ("threshold", pa.float64()), ("roc_auc", pa.float64()), ("pr_auc", pa.float64()),
        ("precision", pa.float64()), ("recall", pa.float64()), ("brier", pa.float64()),
        ("calibration", pa.string()), ("estimated_roc_auc", pa.float64()),
        ("estimated_precision", pa.float64()), ("estimated_recall", pa.float64()),
        ("estimation_error", pa.string()), ("calibrated", pa.bool_()), ("blessed_roc_auc", pa.float64()),
        ("labels_commit", pa.int64()), ("archive_version", pa.int64()), ("run_id", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)  # fmt: skip


class PerformanceError(FjordError):
    """The labels cannot be joined as specified (no key column, no label column)."""

    exit_code = 2


class PerformanceSpec(JobSpec):
    project: str
    model_name: str = Field(default="fraud", description="the serving whose predictions are judged")
    labels_group: str = Field(default="fraud_labels", description="the feature group holding the labels")
    labels_version: int = Field(default=1, ge=1)
    key: str = Field(default="tid", description="the passthrough field the labels are joined on")
    label: str = Field(default="is_fraud", description="the label column (1: positive)")
    prediction_output: str | None = Field(default=None, description="default: the model's first output")
    window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400, description="event-time windows")
    lookback_days: int = Field(default=30, ge=1, le=3_650, description="how far back labels may land")
    tolerance: float = Field(default=0.05, ge=0, le=1, description="realized AUC below blessed - this: alert")
    min_rows: int = Field(default=200, ge=1, description="labelled rows a window needs to raise an alert")
    notify_airflow: bool = True
    asset_uri: str | None = Field(default=None, description="default: fjord://performance/<project>/<model>")


@dataclass
class PerformanceResult:
    run_id: str
    model: str
    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    predictions: int = 0
    labelled: int = 0
    table: str = ""

    def summary(self) -> str:
        lines = [f"{self.model}: {self.labelled:,} of {self.predictions:,} archived predictions labelled; "
                 f"{len(self.windows)} window(s) in {self.table}"]  # fmt: skip
        for w in self.windows[-5:]:
            lines.append(f"  {window_line(w)}")
        lines += [f"  ALERT {a['message']}" for a in self.alerts]
        return "\n".join(lines)


def _text(value: Any, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def window_line(w: dict[str, Any]) -> str:
    """One window, estimated beside realized: what ``fjord run`` and ``fjord monitor performance`` print."""
    return (
        f"v{w['version']} {w['window_start']:%Y-%m-%d %H:%M}: {w['labelled_rows']:,}/{w['predictions']:,} "
        f"labelled; ROC AUC realized {_text(w['roc_auc'])} estimated {_text(w['estimated_roc_auc'])} "
        f"(blessed {_text(w['blessed_roc_auc'])}); precision {_text(w['precision'])} est. "
        f"{_text(w['estimated_precision'])}; recall {_text(w['recall'])} est. {_text(w['estimated_recall'])}"
    )


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _labels(spec: PerformanceSpec) -> tuple[Any, int, str]:
    """(key -> label as a pandas Series, the labels group's commit id, its location)."""
    store = featurestore.connect(spec.project)
    group = store.get_feature_group(spec.labels_group, spec.labels_version)
    missing = [c for c in (spec.key, spec.label) if c not in {f.name for f in group.features}]
    if missing:
        raise PerformanceError(f"feature group {group} has no column {missing[0]!r}",
                               hint=f"its columns: {', '.join(f.name for f in group.features)}")  # fmt: skip
    commit = group.snapshot().version
    frame = group.read(columns=[spec.key, spec.label])
    frame = frame.dropna(subset=[spec.label])
    return frame.set_index(frame[spec.key].map(key_text))[spec.label].astype("int64"), commit, group.location


def _window_rows(spec: PerformanceSpec, project: Any, served: Any, labels: Any, commit: int,
                 archive_version: int | None, run_id: str) -> list[dict[str, Any]]:  # fmt: skip
    import pandas as pd

    window = pd.Timedelta(seconds=spec.window_seconds)
    epoch = pd.Timestamp(0, tz="UTC")
    served = served.assign(window_start=epoch + ((served["request_time"] - epoch) // window) * window)
    if spec.key in served.columns:
        served = served.assign(label=served[spec.key].map(key_text).map(labels))
    else:  # no call carried the key: nothing joins
        served = served.assign(label=np.nan)
    rows, now = [], datetime.now(UTC)
    cards = {int(v): load_card(project, spec.model_name, int(v)) or {} for v in served["version"].unique()}
    for (version, start), group in served.groupby(["version", "window_start"], sort=True):
        card = cards[int(version)]
        metrics = card.get("metrics") or {}
        threshold = float(metrics.get("threshold", 0.5))
        scores = group["score"].to_numpy("float64")
        _, counts, sums = histogram(scores)
        guess = estimate(counts, sums, threshold)
        labelled = group[group["label"].notna() & np.isfinite(group["score"])]
        y, labelled_scores = labelled["label"].to_numpy("int64"), labelled["score"].to_numpy("float64")
        truth = realized(y, labelled_scores, threshold)
        error = {
            m: _finite(guess[m]) - _finite(truth[m])  # type: ignore[operator]
            for m in ("roc_auc", "precision", "recall")
            if _finite(guess.get(m)) is not None and _finite(truth.get(m)) is not None
        }
        rows.append({
            "model": spec.model_name, "version": int(version), "window_start": start.to_pydatetime(),
            "window_end": (start + window).to_pydatetime(), "predictions": len(group),
            "labelled_rows": truth["rows"], "positives": truth["positives"], "threshold": threshold,
            **{m: _finite(truth.get(m)) for m in ("roc_auc", "pr_auc", "precision", "recall", "brier")},
            "calibration": truth.get("calibration", []),
            "estimated_roc_auc": _finite(guess.get("roc_auc")),
            "estimated_precision": _finite(guess.get("precision")),
            "estimated_recall": _finite(guess.get("recall")),
            "estimation_error": error, "calibrated": (card.get("calibration") or {}).get("calibrated"),
            "blessed_roc_auc": _finite(metrics.get("roc_auc")), "labels_commit": commit,
            "archive_version": archive_version, "run_id": run_id, "updated_at": now,
        })  # fmt: skip
    return rows


def _findings(spec: PerformanceSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An alert row for each window whose realized AUC fell below its version's blessed AUC - tolerance."""
    found = []
    for w in rows:
        blessed, auc = w["blessed_roc_auc"], w["roc_auc"]
        if blessed is None or auc is None or w["labelled_rows"] < spec.min_rows:
            continue
        if auc < blessed - spec.tolerance:
            start_ms = int(w["window_start"].timestamp() * 1000)
            found.append({
                "alert_id": f"{w['model']}/{w['version']}/{start_ms}/performance",
                "model": w["model"], "version": w["version"], "window_start": w["window_start"],
                "kind": "performance",
                "message": f"{w['model']} v{w['version']}: realized ROC AUC {auc:.3f} over "
                           f"{w['labelled_rows']:,} labelled rows is below its blessed {blessed:.3f} - "
                           f"{spec.tolerance} (window {w['window_start']:%Y-%m-%d %H:%M})",
                "detail": json.dumps({"roc_auc": auc, "blessed_roc_auc": blessed, "tolerance": spec.tolerance,
                                      "labelled_rows": w["labelled_rows"],
                                      "window_end": w["window_end"].isoformat()}),
                "state": "pending", "event_id": None, "dag_run_id": None, "created_at": datetime.now(UTC),
                "posted_at": None,
            })  # fmt: skip
    return found


def run(spec: PerformanceSpec) -> PerformanceResult:
    """Join, measure, store, alert; see the module docstring."""
    project = get_project(spec.project)
    archive = InferenceArchive(project.fs, spec.model_name)
    store = MonitorStore(project.fs, spec.model_name)
    with track_run(project, "performance", params=spec.model_dump(mode="json"), code=_CODE,
                   **spec.run_tree()) as record:  # fmt: skip
        labels, commit, labels_location = _labels(spec)
        table = archive.table()
        archive_version = table.version() if table is not None else None
        since = datetime.now(UTC) - timedelta(days=spec.lookback_days)
        served = predictions(archive, since, output=spec.prediction_output, as_of=archive_version)
        progress(f"performance: {len(served):,} archived predictions since {since:%Y-%m-%d}, "
                 f"{len(labels):,} labels (commit {commit})")  # fmt: skip
        record.add_input(labels_location, str(commit), kind="feature_group")
        if archive_version is not None:
            record.add_input(archive.uri, str(archive_version), kind="inference_archive")
        rows = []
        if len(served):
            rows = _window_rows(spec, project, served, labels, commit, archive_version, record.run_id)
        labelled = sum(r["labelled_rows"] for r in rows)
        store.upsert("performance", rows, ("model", "version", "window_start"), PERFORMANCE_SCHEMA)
        crash_point("performance.measured")  # a kill here: the rerun measures the same, then alerts
        # a shadow's windows are measured and shown, but only an answering version's alert retrains
        shadows: set[int] = set()
        if len(served):
            shadow = served["shadow"].astype(bool)
            shadows = set(served.loc[shadow, "version"]) - set(served.loc[~shadow, "version"])
        findings = [f for f in _findings(spec, rows) if f["version"] not in shadows]
        fresh = alerting.record_new(store, "performance_alerts", findings)
        if spec.notify_airflow:
            asset = spec.asset_uri or performance_asset(spec.project, spec.model_name)
            alerting.deliver_stored(store, "performance_alerts", asset)
        record.add_output(store.uri("performance"), kind="performance")
        shown = [r for r in store.performance() if r["model"] == spec.model_name]
        return PerformanceResult(
            run_id=record.run_id, model=spec.model_name, windows=shown, alerts=fresh,
            predictions=len(served), labelled=labelled, table=store.uri("performance"),
        )  # fmt: skip
