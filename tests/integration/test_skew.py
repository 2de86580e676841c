"""Training/serving skew, row by row, on real Spark ETL output: a day of transactions served through
the server's own online lookup and transformer, then computed by the ETL from the raw batch. The
shipped transformer matches the ETL; a deliberately wrong one is caught, alerted once (across a
kill) and marks the drift alert of its window suspect; bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import pandas as pd
import pytest

import featurestore
from fjord.cli.main import app
from fjord.faults import CRASH_EXIT_CODE
from fjord.projects import create_project
from jobs.etl.demo_data import DemoSpec, generate
from jobs.monitor.store import ALERT_SCHEMA, MonitorStore
from jobs.performance.job import PerformanceSpec
from jobs.performance.job import run as run_performance
from jobs.skew.job import SkewSpec, run
from tests.conftest import REPO
from tests.integration.skew_setup import local_hour, publish, serve_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _spec(**overrides) -> SkewSpec:
    return SkewSpec(**{"project": "fraud", "notify_airflow": False, **overrides})


def _drift_alert(store: MonitorStore, version: int, start: datetime) -> str:
    alert_id = f"fraud/{version}/{int(start.timestamp() * 1000)}/drift"
    row = {"alert_id": alert_id, "model": "fraud", "version": version, "window_start": start, "kind": "drift",
           "message": "2 of 13 features drifted", "detail": json.dumps({"window_end": start.isoformat()}),
           "state": "posted", "event_id": 1, "dag_run_id": "run-1", "created_at": datetime.now(UTC),
           "posted_at": datetime.now(UTC)}  # fmt: skip
    store.upsert("alerts", [row], ("alert_id",), ALERT_SCHEMA)
    return alert_id


def test_the_served_inputs_match_the_etl_and_a_wrong_transformer_is_caught(spark, capsys):
    project = create_project("fraud")
    batches = generate(project.fs, DemoSpec(rows=3000, days=3, seed=5))
    publish(project, batches[:2])
    served = serve_day(project, batches[2], per_request=20)  # the day's traffic, before its ETL
    serve_day(project, batches[2], transformer=local_hour, version=2, archive_batch=1)
    publish(project, batches[2:])
    store = MonitorStore(project.fs, "fraud")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    drift = _drift_alert(store, 2, today.replace(hour=1))

    # Killed after it stored the comparison, before the alert: the rerun alerts, once.
    env = {**os.environ, "FJORD_CRASH_AT": "skew.measured"}
    argv = [sys.executable, "-m", "jobs.skew.main", "--project=fraud", "--no-notify-airflow"]
    killed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    assert store.skew() and store.alerts_of("skew_alerts") == []
    result = run(_spec())
    assert result.joined == 2 * served and result.requests == 2 * served

    by = {(r["version"], r["feature"]): r for r in result.rows}
    right = [r for r in result.rows if r["version"] == 1]
    assert len(right) == 13 and all(r["rows"] == served for r in right)
    # Exact but for transactions of one card within one second, which the ETL's window counts as
    # peers (measured: at most 0.1% of rows); the old approximation was off in 70-100% of rows.
    assert max(r["share"] for r in right) <= 0.002, [(r["feature"], r["share"]) for r in right]
    assert by[(2, "hour")]["share"] == 1.0 and by[(2, "hour")]["mean_abs_diff"] >= 1
    worst = by[(2, "hour")]["worst"][0]
    assert worst["served"] == (worst["offline"] + 1) % 24 and len(worst["inference_id"]) == 32
    assert by[(2, "amount")]["share"] == 0.0  # the rest of the wrong transformer is right

    (alert,) = store.alerts_of("skew_alerts")
    assert alert["version"] == 2 and alert["kind"] == "skew" and "hour 100.0%" in alert["message"]
    assert [a["alert_id"] for a in result.alerts] == [alert["alert_id"]] and result.suspect == [drift]
    assert run(_spec()).alerts == [] and len(store.alerts_of("skew_alerts")) == 1
    assert [m["alert_id"] for m in store.suspects()] == [drift]

    app(["monitor", "skew", "-p", "fraud"], standalone_mode=False)
    shown = capsys.readouterr().out
    assert "hour" in shown and "100.00% beyond tolerance" in shown and worst["inference_id"][:12] in shown
    app(["monitor", "alerts", "-p", "fraud", "--json"], standalone_mode=False)
    alerts = {a["alert_id"]: a for a in json.loads(capsys.readouterr().out)}
    assert alerts[drift]["suspect_of_skew"] == alert["alert_id"] and alert["alert_id"] in alerts

    # The labels the ETL published join the served scores: realized beside estimated, on the page
    for version, auc in ((1, 0.7), (2, 0.7)):
        with project.fs.publish(f"Models/fraud/{version}") as out:
            out.write_text("fjord-model.json", json.dumps({"metrics": {"roc_auc": auc, "threshold": 0.5}}))
    performance = run_performance(PerformanceSpec(project="fraud", notify_airflow=False)).windows
    assert {w["version"] for w in performance} == {1, 2} and all(
        w["labelled_rows"] == served for w in performance
    )
    _the_dashboard_shows_performance_skew_and_the_suspect_alert(store, performance, drift)


def _the_dashboard_shows_performance_skew_and_the_suspect_alert(store, performance, drift) -> None:
    from playwright.sync_api import sync_playwright

    from jobs.monitor import service

    address = service.dashboard_start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(service.dashboard_login(address, "project=fraud&model=fraud"))
            page.wait_for_function(
                "window.fjordCharts.performance && window.fjordSkew && window.fjordSkew.length"
            )
            drawn = page.evaluate("() => window.fjordCharts.performance.data")
            skew_rows = page.locator("#skew tbody tr").all_inner_texts()
            alerts = page.locator("#alerts tbody tr").all_inner_texts()
            browser.close()
    finally:
        assert service.dashboard_stop()
    assert drawn[0] == [int(w["window_start"].timestamp()) for w in performance]
    assert drawn[1] == pytest.approx([w["roc_auc"] for w in performance])
    assert drawn[2] == pytest.approx([w["estimated_roc_auc"] for w in performance])
    assert drawn[3] == [0.7, 0.7]  # the blessed AUC, the reference line
    assert len(skew_rows) == 26 and skew_rows[0].startswith("v1")  # the latest window of each version
    hour = next(r for r in skew_rows if r.startswith("v2") and "\thour\t" in r)
    assert "100.00 %" in hour
    suspect = next(a for a in alerts if "[suspect: skew in the same window]" in a)
    assert "drift" in suspect and any("\tskew\t" in a for a in alerts)


def test_an_empty_archive_measures_nothing_and_an_unknown_view_or_a_bad_option_is_one_line():
    project = create_project("fraud")
    store = featurestore.connect("fraud")
    group = store.get_or_create_feature_group("tx", 1, primary_key=["tid"], event_time="ts")
    group.insert(pd.DataFrame({"tid": [1, 2], "ts": pd.to_datetime(["2026-12-01", "2026-12-02"], utc=True),
                               "amount": [10.0, 20.0]}))  # fmt: skip
    store.get_or_create_feature_view("v", 1, query=group.select(["amount"]))
    empty = run(_spec(view="v"))  # nothing archived yet: no rows, no alert, no error
    assert (empty.rows, empty.alerts, empty.joined) == ([], [], 0)
    assert MonitorStore(project.fs, "fraud").skew() == []

    argv = [sys.executable, "-m", "jobs.skew.main", "--project=fraud", "--view=nope"]
    missing = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1, missing.stderr
    assert "nope" in missing.stderr
    bad = subprocess.run([*argv[:4], "--max-share=2"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "max_share" in bad.stderr.replace("-", "_")
