"""Realized performance: archived predictions joined by their passthrough key with labels published
through the feature store; metrics equal scikit-learn's on the joined rows; late labels update their
window without double counting; a drop below the blessed AUC alerts once, across a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

import featurestore
from fjord.faults import CRASH_EXIT_CODE
from fjord.projects import create_project
from jobs.monitor import stream
from jobs.monitor.archive import InferenceArchive
from jobs.monitor.store import MonitorStore
from jobs.performance.job import PerformanceError, PerformanceSpec, run
from tests.conftest import REPO

pytestmark = pytest.mark.slow
DAY = datetime(2026, 12, 3, tzinfo=UTC)


def _serve(archive: InferenceArchive, version: int, tids: np.ndarray, scores: np.ndarray, batch: int) -> None:
    """Response records of one call per transaction, as the server logs them, into the archive."""
    rows = []
    for i, (tid, score) in enumerate(zip(tids.tolist(), scores.tolist(), strict=True)):
        ts = int(DAY.timestamp() * 1000) + i * 1000
        record = {
            "inferenceId": uuid.uuid4().hex, "type": "response", "modelName": "fraud",
            "modelVersion": version, "api": "rest", "requestTimestamp": ts, "httpCode": 200, "latencyMs": 1.0,
            "outputs": {"fraud_probability": [score]}, "passthrough": {"tid": [tid]},
        }  # fmt: skip
        position = batch * 10_000 + i
        rows.append((record["inferenceId"], "response", "fraud", version, "rest", ts, 200, 1.0,
                     orjson.dumps(record).decode(), "fraud_inference_log", 0, position))  # fmt: skip
    table = pa.Table.from_pylist([dict(zip(stream.ARCHIVED, r, strict=True)) for r in rows])
    archive.append(table.cast(pa.schema([stream.OUTPUT.field(n) for n in stream.ARCHIVED])), "test", batch)


def _card(project, version: int, auc: float) -> None:
    card = {"run_id": f"train-{version}", "metrics": {"roc_auc": auc, "threshold": 0.3},
            "calibration": {"calibrated": True, "ece": 0.01}}  # fmt: skip
    with project.fs.publish(f"Models/fraud/{version}") as out:
        out.write_text("fjord-model.json", json.dumps(card))


def _label(tids: np.ndarray, y: np.ndarray) -> None:
    group = featurestore.connect("fraud").get_or_create_feature_group(
        "fraud_labels", 1, primary_key=["tid"], event_time="ts"
    )
    group.insert(pd.DataFrame({"tid": tids, "ts": [pd.Timestamp(DAY)] * len(tids), "is_fraud": y}))


def _spec(**overrides) -> PerformanceSpec:
    return PerformanceSpec(**{"project": "fraud", "notify_airflow": False, "lookback_days": 3650,
                              "min_rows": 100, **overrides})  # fmt: skip


def test_realized_metrics_late_labels_and_an_alert_across_a_kill():
    project = create_project("fraud")
    archive = InferenceArchive(project.fs, "fraud")
    rng = np.random.default_rng(4)
    scores = rng.beta(0.6, 4, 600)
    y = (rng.random(600) < scores).astype("int64")
    tids = np.arange(1_000, 1_600)
    _card(project, 1, auc=0.75)
    _serve(archive, 1, tids, scores, batch=0)
    _serve(archive, 1, np.array([None] * 50), rng.random(50), batch=1)  # calls without a tid: never joined
    _label(tids[:400], y[:400])  # the rest of the labels land a day later

    first = run(_spec())
    (window,) = first.windows
    assert (window["predictions"], window["labelled_rows"], first.labelled) == (650, 400, 400)
    joined_y, joined_scores = y[:400], scores[:400]
    assert window["roc_auc"] == pytest.approx(roc_auc_score(joined_y, joined_scores), abs=1e-12)
    assert window["pr_auc"] == pytest.approx(average_precision_score(joined_y, joined_scores), abs=1e-12)
    assert window["brier"] == pytest.approx(brier_score_loss(joined_y, joined_scores), abs=1e-12)
    flagged = joined_scores >= 0.3
    assert window["precision"] == pytest.approx((joined_y[flagged] == 1).mean(), abs=1e-12)
    assert window["estimated_roc_auc"] is not None and window["calibrated"] is True
    assert first.alerts == []  # realized is near the blessed 0.75

    _label(tids[400:], y[400:])
    second = run(_spec())
    (window,) = second.windows  # the same window, updated, not a second one
    assert window["labelled_rows"] == 600 and window["positives"] == int(y.sum())
    assert window["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    again = run(_spec())
    drop = {"run_id", "updated_at"}
    assert [{k: v for k, v in w.items() if k not in drop} for w in again.windows] == [
        {k: v for k, v in w.items() if k not in drop} for w in second.windows
    ]

    # Version 2 serves scores unrelated to the labels: realized AUC far below its blessed 0.9. The
    # job is killed after it stored the windows, before the alert: the rerun raises it, once.
    _card(project, 2, auc=0.9)
    _serve(archive, 2, tids, rng.random(600), batch=2)
    env = {**os.environ, "FJORD_CRASH_AT": "performance.measured"}
    argv = [sys.executable, "-m", "jobs.performance.main", "--project=fraud", "--no-notify-airflow",
            "--lookback-days=3650", "--min-rows=100"]  # fmt: skip
    killed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    store = MonitorStore(project.fs, "fraud")
    assert {w["version"] for w in store.performance()} == {1, 2}
    assert store.alerts_of("performance_alerts") == []
    rerun = run(_spec())
    (alert,) = store.alerts_of("performance_alerts")
    assert alert["version"] == 2 and alert["kind"] == "performance" and alert["state"] == "pending"
    assert "below its blessed 0.900" in alert["message"] and [a["alert_id"] for a in rerun.alerts] == [
        alert["alert_id"]
    ]
    assert run(_spec()).alerts == [] and len(store.alerts_of("performance_alerts")) == 1


def test_a_labels_group_without_the_key_is_one_line():
    create_project("fraud")
    featurestore.connect("fraud").get_or_create_feature_group(
        "fraud_labels", 1, primary_key=["id"], event_time="ts"
    ).insert(pd.DataFrame({"id": [1], "ts": [pd.Timestamp(DAY)], "is_fraud": [0]}))
    with pytest.raises(PerformanceError, match="has no column 'tid'"):
        run(_spec())
    argv = [sys.executable, "-m", "jobs.performance.main", "--project=fraud", "--labels-group=nope"]
    missing = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1, missing.stderr
    assert "nope" in missing.stderr
