"""The streaming monitor on the embedded Kafka and Spark: windows that add up to what an independent
consumer reads, exactly once across a kill, and an inference archive that holds each record once;
dead letters that never stop the query; records
attributed to the version that served them; drift against the training dataset's statistics."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from fjord.config import reset_settings
from fjord.errors import NotFoundError
from fjord.faults import CRASH_EXIT_CODE
from fjord.lineage import get_run
from jobs.monitor.archive import InferenceArchive, predictions
from jobs.monitor.job import Monitor, MonitorSpec, run
from jobs.monitor.store import MonitorStore
from tests.conftest import REPO
from tests.integration.monitor_setup import MODEL, Traffic, monitored_project
from tests.integration.test_kafka import read_all
from tests.waiting import wait_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]
WINDOW_S = 2


def _spec(topic: str, **overrides) -> MonitorSpec:
    fields = {"project": "mon", "model_name": MODEL, "topic": topic, "window_seconds": WINDOW_S,
              "lateness_seconds": 1, "min_rows": 100, "prediction_output": "sum", "notify_airflow": False,
              "available_now": True}  # fmt: skip
    return MonitorSpec(**{**fields, **overrides})


def _expected(bootstrap: str, topic: str) -> tuple[Counter, int]:
    """Response records per (version, window start ms), and malformed records: an independent count."""
    per_window: Counter = Counter()
    malformed = 0
    for record in read_all(bootstrap, topic, 1):
        try:
            value = json.loads(record.value)
        except ValueError:
            malformed += 1
            continue
        if not isinstance(value, dict) or "modelName" not in value:
            malformed += 1
        elif value["type"] == "response":
            ts = value["requestTimestamp"]
            per_window[(value["modelVersion"], ts - ts % (WINDOW_S * 1000))] += 1
    return per_window, malformed


def _produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    from fjord.kafka import login_options

    producer = KafkaProducer(bootstrap_servers=bootstrap, **login_options())
    for value in values:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()


def _send(traffic: Traffic, start: float, seconds: float, version: int, *, rate: int = 150,
          shift: float = 0.0) -> float:  # fmt: skip
    """``rate`` calls a second of ``version`` for ``seconds``, stamped from ``start`` on; the end. The
    monitor windows by the records' own timestamps (event time), so no test waits for the clock."""
    calls = int(seconds * rate)
    for i in range(calls):
        traffic.call(version, shift=shift, started=start + i / rate)
    return start + seconds


def test_windows_add_up_exactly_once_across_a_kill(broker, tmp_path) -> None:
    project = monitored_project()
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    from fjord import kafka

    kafka.ensure_topic(topic)
    traffic = Traffic(topic, broker)
    now = _send(traffic, time.time() - 10, 3, version=1)
    _produce_raw(broker, topic, [b"not json", b"[1, 2]", b'{"type": "request"}'] * 100)
    now = _send(traffic, now, 3, version=2, shift=2.0)  # version 2 serves drifted inputs
    traffic.call(1, started=now - 30)  # late: its window closed long ago
    traffic.call(2, started=now + 3)  # a later record moves the watermark past every window above
    traffic.close()

    # A monitor in its own process, small micro-batches, killed (os._exit, as kill -9) in its third
    # micro-batch, after the batch's records went to the archive and before its windows did.
    env = {**os.environ, "PYTHONPATH": str(REPO), "FJORD_CRASH_AT": "monitor.archived#3"}
    args = [f"--{k.replace('_', '-')}={v}" for k, v in _spec(topic, available_now=False).model_dump().items()
            if v is not None and not isinstance(v, bool)]  # fmt: skip
    monitor = subprocess.Popen(
        [sys.executable, "-m", "jobs.monitor.main", *args, "--max-records-per-trigger=400",
         "--trigger-seconds=0.5", "--no-notify-airflow"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    store = MonitorStore(project.fs, MODEL)
    archived = InferenceArchive(project.fs, MODEL)
    try:
        assert monitor.wait(timeout=180) == CRASH_EXIT_CODE, monitor.stdout.read().decode()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(monitor.pid, signal.SIGKILL)  # its Spark JVM too
    partial = store.windows()
    assert partial and not all(w["final"] for w in partial)  # killed mid-stream
    assert max(w["batch_id"] for w in partial) < max(archived.records()["batch_id"].to_pylist())

    result = run(_spec(topic))  # the same checkpoint: resumes after the last committed batch
    expected, malformed = _expected(broker, topic)
    windows = store.windows()
    counted = Counter(
        {(w["version"], int(w["window_start"].timestamp() * 1000)): w["requests"] for w in windows}
    )
    late = {
        k: w["late"]
        for w in windows
        if w["late"]
        for k in [(w["version"], int(w["window_start"].timestamp() * 1000))]
    }
    assert list(late.values()) == [2]  # the late call's request and response, in its closed window
    (late_key,) = late
    assert counted[late_key] == 0 and expected[late_key] == 1
    # every other response record counted once, in its window: none lost, none twice
    assert counted == expected - Counter({late_key: 1})
    assert malformed == 300 and store.dead_letter_count() == 300 and result.dead_letters == 300
    # the archive: every valid record once (the table itself, not a deduplicating read), as a consumer
    # of the topic counts them, each at its Kafka position
    table = archived.table().to_pyarrow_table()
    positions = list(
        zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True)
    )
    valid = {(r.partition, r.offset) for r in read_all(broker, topic, 1) if b"modelName" in r.value}
    assert len(positions) == len(set(positions)) and set(positions) == valid
    served = predictions(archived, output="sum")
    assert len(served) == 4 * sum(expected.values()) and served["score"].notna().all()  # 4 rows a call
    assert {str(a.uri) for a in get_run(f"archive-mon-{MODEL}-v2").inputs} >= {
        project.fs.uri(f"Models/{MODEL}/2")
    }
    reasons = Counter(d["reason"] for d in store.dead_letters())
    assert reasons == {"not valid JSON": 100, "not a JSON object": 100, "no modelName": 100}

    # attributed to the version that served them; only version 2's inputs drifted
    finals = [w for w in windows if w["final"] and w["requests"] >= 100]
    assert {w["version"] for w in finals} == {1, 2}
    for w in finals:
        assert w["error_rate"] == 0 and w["latency_p50_ms"] is not None and w["rows"] == 4 * w["requests"]
        assert w["drift"] == (w["version"] == 2), w
        assert w["features"]["x"]["drifted"] == (w["version"] == 2)
        assert not w["features"]["y"]["drifted"]
    alerts = store.alerts()
    assert alerts and {a["kind"] for a in alerts} == {"drift"} and {a["version"] for a in alerts} == {2}
    assert [a["state"] for a in alerts].count("pending") == 1  # the others within the cool-down
    assert run(_spec(topic)).batches == 0  # nothing new: nothing processed, nothing changed
    assert store.windows() == windows


def test_a_replayed_batch_changes_nothing(broker, spark) -> None:
    project = monitored_project(versions=(1,))
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    monitor = Monitor(_spec(topic), project, spark)
    monitor.app_id, _ = "test-app", monitor.ready.set()
    now = int(time.time() * 1000)
    record = {"inferenceId": "a", "type": "response", "modelName": MODEL, "modelVersion": 1,
              "requestTimestamp": now, "latencyMs": 1.5, "httpCode": 200,
              "outputs": {"sum": [0.2]}}  # fmt: skip
    batch = spark.createDataFrame(
        [(topic, 0, i, None, json.dumps(record).encode()) for i in range(5)],
        "topic string, partition int, offset long, timestamp timestamp, value binary",
    )
    monitor.process_batch(batch, 0)
    table = MonitorStore(project.fs, MODEL)
    first = table.windows()
    assert first[0]["requests"] == 5
    monitor.process_batch(batch, 0)  # Spark replays batch 0 after a crash
    assert table.windows() == first
    monitor.restore()  # a restarted process: the same
    monitor.process_batch(batch, 0)
    assert table.windows() == first
    monitor.process_batch(batch, 1)
    assert table.windows()[0]["requests"] == 10


def test_bad_specs_and_an_unknown_topic(broker) -> None:
    monitored_project(versions=(1,))
    with pytest.raises(NotFoundError, match="topic 'nope' does not exist"):
        run(_spec("nope"))
    with pytest.raises(ValueError, match="window_seconds"):
        _spec("t", window_seconds=0)


def test_the_dashboard_shows_what_the_model_server_logged(broker, tmp_path, capsys) -> None:
    """Calls through the real model server -> its inference log on Kafka -> the monitor -> the
    dashboard in headless Chromium: the charts hold the windows' numbers; the CLI shows the same."""
    import httpx
    from playwright.sync_api import sync_playwright

    from fjord.cli.main import main
    from jobs.monitor import service
    from tests.integration.serving_server import ServerProcess
    from tests.serving_models import write_version

    project = monitored_project(versions=(1,))
    write_version(tmp_path / "m", 1)
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    rules = tmp_path / "inputs.json"  # flagged, not refused: x above 0.2 is served and counted
    rule = {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "max_value": 0.2}}
    rules.write_text(json.dumps({"expectations": [rule]}))
    server = ServerProcess(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--inference_logging=ALL",
        f"--kafka_bootstrap_servers={broker}", f"--kafka_topic={topic}",
        "--monitoring_config_file=/dev/null", f"--input_rules={rules}", "--input_rules_mode=flag",
        log=tmp_path / "server.log",
    )  # fmt: skip
    calls = 300
    try:
        server.wait_ready("m")
        url = f"{server.url}/v1/models/m:predict"
        with httpx.Client() as client:
            for _ in range(calls):
                instances = [{"x": float(j % 7) / 7, "y": 0.1} for j in range(4)]
                assert client.post(url, json={"instances": instances}).status_code == 200
    finally:
        server.stop()
    # the server's last sends are on the topic, then a later call moves the watermark past them all
    wait_for(lambda: len(read_all(broker, topic, 1)) >= 2 * calls, 60, "the server's inference log")
    traffic = Traffic(topic, broker)
    traffic.call(1, started=time.time() + WINDOW_S + 1.5)
    traffic.close()
    run(_spec(topic, prediction_output="sum"))
    store = MonitorStore(project.fs, MODEL)
    windows = store.windows()
    assert sum(w["requests"] for w in windows) == calls + 1
    assert sum(w["input_violations"] for w in windows) == 2 * calls  # x = 2/7 and 3/7 of each call
    assert {f for w in windows for f in w["violations_by_field"]} == {"x"}

    assert main(["monitor", "status", "-p", "mon", "-m", MODEL]) == 0
    out = capsys.readouterr().out
    assert "monitor of mon/m: stopped" in out and "dead letters: 0" in out
    assert main(["monitor", "alerts", "-p", "mon", "-m", MODEL]) == 0  # y = 0.1 is not the 0..9 learned
    assert "features drifted (x, y" in capsys.readouterr().out.replace("\n", " ").replace("│", " ").replace(
        "  ", " "
    )
    assert main(["monitor", "status", "-p", "mon", "-m", MODEL, "--last", "0"]) == 2  # usage error
    assert main(["monitor", "status", "-p", "nope", "-m", MODEL]) == 3
    assert "nope" in capsys.readouterr().err

    address = service.dashboard_start()
    try:
        assert service.dashboard_start() == address  # found running
        # Another user of the machine reaches the port, not the data: no token, a wrong one, a guess.
        token = service.dashboard_token()
        guessed = {"Cookie": f"fjord_dashboard_{httpx.URL(address).port}=nope"}
        for headers in ({}, {"Authorization": "Bearer nope"}, guessed):
            for path in ("/", "/api/monitors", f"/api/data?project=mon&model={MODEL}", "/static/index.html"):
                answer = httpx.get(f"{address}{path}", headers=headers, timeout=30)
                assert answer.status_code == 401 and "token" in answer.json()["error"], (path, headers)
        assert httpx.get(f"{address}/?token=nope", timeout=30).status_code == 401
        assert token not in (service.dashboard_state() or {}).get("url", "")
        bearer = {"Authorization": f"Bearer {token}"}
        for query in ("project=mon&model=../../services/airflow", "project=../mon&model=m",
                      "project=mon&model=frad", "project=nope&model=m"):  # fmt: skip
            answer = httpx.get(f"{address}/api/data?{query}", headers=bearer, timeout=30)
            assert answer.status_code == 404 and answer.json()["error"], query
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(service.dashboard_login(address, f"project=mon&model={MODEL}"))  # the printed link
            assert "token" not in page.url and page.url.endswith(f"/?project=mon&model={MODEL}")
            page.wait_for_function("window.fjordCharts.throughput && window.fjordCharts.histogram")
            shown = page.evaluate(
                "() => Object.fromEntries(Object.entries(window.fjordCharts).map(([k, c]) => [k, c.data]))"
            )
            assert page.locator("#served").inner_text().startswith("mon/m")
            assert page.locator("#state").inner_text() == "monitor stopped"
            assert page.locator("#alerts tbody tr").count() == len(store.alerts()) >= 1
            drift_tile = page.locator("#tile-drift").inner_text()
            assert page.locator("#tile-violations").inner_text().replace(",", "") == str(2 * calls)
            assert page.locator("#tile-violations-fields").inner_text().replace(",", "") == f"x {2 * calls}"
            # the versions side by side: the one version that answered, with all its calls
            (version,) = page.evaluate("() => window.fjordVersions")
            assert (version["version"], version["requests"]) == (1, calls + 1)
            cells = page.locator("#versions tbody tr td").all_inner_texts()
            assert cells[0] == "v1" and cells[2].replace(",", "") == str(calls + 1)
            browser.close()
    finally:
        assert service.dashboard_stop()
    starts = [int(w["window_start"].timestamp()) for w in windows]
    assert shown["throughput"][0] == starts
    assert shown["throughput"][1] == pytest.approx([w["requests"] / WINDOW_S for w in windows])
    assert shown["latency"][2] == pytest.approx([w["latency_p95_ms"] for w in windows])
    assert shown["predictions"][1] == pytest.approx([w["positive_rate"] for w in windows])
    last = [w for w in windows if w["final"]][-1]
    # the tiles show the last closed window: drifted, or too few values to be scored (a window the
    # traffic only grazed)
    expected_tile = "not scored" if last["drift_share"] is None else "DRIFT" if last["drift"] else "none"
    assert expected_tile in drift_tile
    assert any(w["drift"] for w in windows if w["final"])  # y = 0.1 is not the 0..9 learned
    assert shown["histogram"][1] == last["prediction_histogram"]
    assert sum(last["prediction_histogram"]) == last["predictions"] == 4 * last["requests"]
    assert shown["drift"][1:3] == [[w["features"].get(f, {}).get("psi") for w in windows] for f in ("x", "y")]


def test_a_broker_restart_mid_stream_loses_nothing(broker, services_home) -> None:
    import threading

    from fjord import kafka
    from fjord.services import service_at

    project = monitored_project(versions=(1,))
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    kafka.ensure_topic(topic)
    traffic = Traffic(topic, broker)
    now = _send(traffic, time.time() - 10, 2, version=1)
    stop, outcome = threading.Event(), {}
    monitor = threading.Thread(
        target=lambda: outcome.update(
            result=run(_spec(topic, available_now=False, trigger_seconds=0.5), stop=stop)
        ),
        daemon=True,
    )
    monitor.start()
    store = MonitorStore(project.fs, MODEL)
    wait_for(store.windows, 120, "the monitor's first commit", interval=0.5)
    server = service_at("kafka", services_home, preferred_ports=False)
    server.stop()
    server.start()
    now = _send(traffic, now, 3, version=1)
    traffic.call(1, started=now + 3)  # closes the windows above
    traffic.close()
    expected, _ = _expected(broker, topic)

    def counted() -> Counter:
        return Counter(
            {
                (w["version"], int(w["window_start"].timestamp() * 1000)): w["requests"]
                for w in store.windows()
            }
        )

    def caught_up() -> bool:
        assert monitor.is_alive(), "the monitor stopped on a broker restart"
        return counted() == expected

    wait_for(caught_up, 180, "every window to count what was produced", interval=1)
    stop.set()
    monitor.join(timeout=120)
    assert "result" in outcome
    assert counted() == expected and sum(w["late"] for w in store.windows()) == 0


def test_a_killed_monitor_is_restarted_and_shown_down_meanwhile(broker, monkeypatch) -> None:
    """Under fjord up the monitor runs under a supervisor: killed, it is shown down (dashboard, status)
    while it waits out its back-off, then started again from its checkpoint; a stop stops both."""
    import psutil

    from jobs.monitor import dashboard, service

    monkeypatch.setenv("FJORD_MONITOR__RESTART_BACKOFF_SECONDS", "6")
    reset_settings()
    monitored_project(versions=(1,))
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    traffic = Traffic(topic, broker)
    _send(traffic, time.time(), 1, 1)
    traffic.close()
    wait_for(lambda: read_all(broker, topic, 1), 60, "the topic")
    options = {"topic": topic, "window_seconds": WINDOW_S, "notify_airflow": False, "min_rows": 100,
               "prediction_output": "sum"}  # fmt: skip
    record = service.start("mon", MODEL, options)
    try:
        first = service.health("mon", MODEL)
        assert first["state"] == "running" and service.describe("mon", MODEL) == "running"
        os.kill(first["child"], signal.SIGKILL)

        def in_state(state: str, restarts: int):
            def found():
                now = service.health("mon", MODEL)
                return now if now and (now["state"], now["restarts"]) == (state, restarts) else None

            return found

        down = wait_for(in_state("down", 0), 60, "down")
        assert down["last_exit"] == -signal.SIGKILL
        shown = dashboard.data("mon", MODEL)
        assert shown["running"] is False and shown["state"].startswith("down: exited -9, restart 1 in ")
        back = wait_for(in_state("running", 1), 60, "the restart")
        log = Path(record["log"])
        wait_for(lambda: log.read_text().count(service.READY_LINE) >= 2, 240, "the query again")
        assert service.describe("mon", MODEL) == "running (restarted 1 time(s))"
        assert dashboard.data("mon", MODEL)["running"] is True
    finally:
        assert service.stop("mon", MODEL)
    assert not psutil.pid_exists(back["child"]) and not psutil.pid_exists(record["pid"])
    assert service.health("mon", MODEL) is None
