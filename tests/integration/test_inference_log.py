"""Inference logging to the embedded Kafka, read back by an independent consumer: a request record
and a response record per call, joined by key, each with the call's passthrough fields (never fed to
the model); a broker that is away for 20 s under load fails no request and loses no record, with the
server's defaults."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid

import httpx
import pytest

from fjord.services import service_at
from tests.integration.serving_server import ServerProcess
from tests.integration.test_kafka import read_all
from tests.serving_models import write_version
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def logged_calls(bootstrap: str, topic: str) -> set[float]:
    """The load calls (x >= 1000) whose request record is on ``topic``, by their x."""
    found = set()
    for record in read_all(bootstrap, topic, 1):
        value = json.loads(record.value)
        x = (value.get("inputs") or {}).get("x") or [0]
        if value["type"] == "request" and x[0] >= 1000:
            found.add(x[0])
    return found


def test_every_call_is_logged_and_a_broker_restart_fails_no_request(broker, services_home, tmp_path):
    kafka_server = broker
    write_version(tmp_path / "m", 1)
    topic = f"m_log_{uuid.uuid4().hex[:6]}"
    server = ServerProcess(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--inference_logging=ALL",
        f"--kafka_bootstrap_servers={kafka_server}", f"--kafka_topic={topic}",
        "--monitoring_config_file=/dev/null", "--passthrough=m=tid", log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        server.wait_ready("m")
        url = f"{server.url}/v1/models/m:predict"
        for i in range(10):  # tid is no input of m: fed to it, it would be a 400
            assert httpx.post(url, json={"instances": [{"x": i, "y": 1, "tid": f"t-{i}"}]}).status_code == 200
        assert httpx.post(url, json={"instances": [{"x": "bad", "y": 1, "tid": 99}]}).status_code == 400
        nested = httpx.post(url, json={"instances": [{"x": 1, "y": 1, "tid": {"a": 1}}]})
        assert nested.status_code == 400 and "passthrough field tid: an object" in nested.json()["error"]
        records = wait_for(
            lambda: (r := read_all(kafka_server, topic, 1)) and len(r) >= 22 and r, what="records"
        )
        by_id: dict[str, dict[str, dict]] = {}
        for record in records:
            value = json.loads(record.value)
            assert record.key.decode() == value["inferenceId"]
            by_id.setdefault(value["inferenceId"], {})[value["type"]] = value
        complete = [pair for pair in by_id.values() if set(pair) == {"request", "response"}]
        assert len(complete) == 10  # the bad call never reached the model: a response record only
        first = next(p for p in complete if p["request"]["inputs"]["x"] == [0.0])
        assert first["response"]["outputs"]["sum"] == [1.0] and first["response"]["httpCode"] == 200
        assert first["response"]["modelVersion"] == 1 and first["response"]["latencyMs"] >= 0
        assert first["request"]["passthrough"] == first["response"]["passthrough"] == {"tid": ["t-0"]}
        assert "tid" not in first["request"]["inputs"]
        refused = [p["response"] for p in by_id.values() if set(p) == {"response"}]
        refused.sort(key=lambda r: r["requestTimestamp"])
        assert refused[0]["httpCode"] == 400 and "not of expected type" in refused[0]["error"]
        assert refused[0]["passthrough"] == {"tid": [99]}  # a refused call is found by its key too

        # Load while the broker goes away for 20 s and comes back: every request answered 200, and
        # every call's two records on the topic (x = 1000 + the call's number, to count them).
        failures, answered, stop = [], [0], threading.Event()
        calls, served = itertools.count(1000), []

        def load() -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    x = next(calls)
                    answer = client.post(url, json={"instances": [{"x": x, "y": 1}]})
                    if answer.status_code != 200:
                        failures.append(answer.status_code)
                    served.append(float(x))
                    answered[0] += 1

        def answers(more: int):
            """Wait until ``more`` requests beyond the ones answered so far were answered."""
            target = answered[0] + more
            wait_for(lambda: answered[0] >= target or failures, 120, f"{more} more answers")

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        broker = service_at("kafka", services_home, preferred_ports=False)
        answers(50)  # under load, with the broker up
        broker.stop()
        away = time.monotonic()
        answers(50)  # with the broker gone
        wait_for(lambda: time.monotonic() - away >= 20 or failures, 60, "a 20 s outage")
        broker.start()
        answers(50)  # after it came back
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == [] and answered[0] >= 150

        def every_call() -> set[float] | None:
            found = logged_calls(kafka_server, topic)
            return found if len(found) >= len(served) else None

        logged = wait_for(every_call, 120, "every record")
        assert logged == set(served)  # none lost
        metrics = httpx.get(f"{server.url}/monitoring/prometheus/metrics")
        assert metrics.status_code == 404  # /dev/null enables no Prometheus path
    finally:
        assert server.stop() == 0
