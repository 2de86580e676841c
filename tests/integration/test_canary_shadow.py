"""A live shadow and a canary on the real model server, its inference log on Kafka, the monitor and
the canary rule: no answer is ever the shadow's, a canary's failure is never the client's, the split
is sticky by key, and the rule rolls a failing canary back; a decision killed midway changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from fjord.faults import CRASH_EXIT_CODE
from fjord.lineage import get_run
from jobs.monitor.job import MonitorSpec, run
from jobs.serve import serving
from jobs.serve.canary import CanarySpec
from jobs.serve.canary import run as decide
from jobs.serve.routing import bucket
from tests.conftest import REPO
from tests.integration.monitor_setup import MODEL, Traffic, monitored_project
from tests.integration.test_kafka import read_all
from tests.serving_models import write_failing_version, write_version
from tests.waiting import wait_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]
CALLS, KEYS = 200, 40


def _grpc_predict(address: str, x: float, key: str):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    for name, value in (("x", [x]), ("y", [1.0])):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=tf.float32))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto([key.encode()]))
    with grpc.insecure_channel(address) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


def test_the_shadow_never_answers_a_failing_canary_never_fails_a_call_and_is_rolled_back(broker, tmp_path):
    base = tmp_path / "m"
    files = {1: write_version(base, 1), 2: write_failing_version(base, 2, below=100.0),
             3: write_version(base, 3, scale=10.0)}  # fmt: skip
    monitored_project(versions=(1, 2, 3), files=files)
    # a topic of its own: the serving's, passed to its server (not <serving>_inference_log)
    serving.create_or_update(
        MODEL, 1, project="mon", passthrough=["k"], kafka_topic=f"m_log_{uuid.uuid4().hex[:6]}"
    )
    serving.create_or_update(MODEL, 2, project="mon", label="canary", canary_percent=50, canary_key="k")
    serving.create_or_update(MODEL, 3, project="mon", label="shadow")
    topic = serving.get_kafka_topic(MODEL, project="mon")
    url = serving.start(project="mon")
    answered: dict[str, tuple[float, str]] = {}  # inference id -> (x, key)
    try:
        for version in (1, 2, 3):
            serving.wait_available(MODEL, version, project="mon", timeout_s=120)
        with httpx.Client(timeout=30) as client:
            for i in range(CALLS):
                key = f"card-{i % KEYS}"
                answer = client.post(f"{url}/v1/models/{MODEL}:predict",
                                     json={"instances": [{"x": float(i), "y": 1.0, "k": key}]})  # fmt: skip
                # every call answered, by stable or the canary (both x + y), never by the shadow (10x)
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"] == [{"sum": i + 1.0, "diff": i - 1.0}]
                answered[answer.headers["x-fjord-inference-id"]] = (float(i), key)
            metrics = client.get(f"{url}/monitoring/prometheus/metrics").text
        canary_keys = {f"card-{j}" for j in range(KEYS) if bucket(f"card-{j}") < 50}
        assert 0 < len(canary_keys) < KEYS
        # over gRPC too: a call the canary fails (x >= 100) is answered by stable, the version says so
        grpc_address = serving.server_state("mon")["grpc"]
        key = sorted(canary_keys)[0]
        response = _grpc_predict(grpc_address, 150.0, key)
        assert response.model_spec.version.value == 1 and list(response.outputs["sum"].float_val) == [151.0]
        assert _grpc_predict(grpc_address, 5.0, key).model_spec.version.value == 2
        rest_fallbacks = sum(1 for x, k in answered.values() if k in canary_keys and x >= 100)
        assert f'fjord_serving_canary_fallbacks{{model_name="{MODEL}"}} {rest_fallbacks}\n' in metrics
        fallbacks = rest_fallbacks + 1  # and the gRPC one

        # the log: each answered call's request and response, each canary failure's two, and the
        # shadow's scorings, in batch records: each answered call's rows in exactly one, after it
        def logged():
            values = [json.loads(r.value) for r in read_all(broker, topic, 1)]
            shadowed = sum(len(v["answered"]) for v in values if v.get("shadow"))
            calls = sum(1 for v in values if not v.get("shadow"))
            return shadowed == CALLS + 2 and calls == 2 * (CALLS + 2) + 2 * fallbacks and values

        values = wait_for(logged, 60, "the log")
        responses = {v["inferenceId"]: v for v in values if v["type"] == "response" and not v.get("shadow")}
        for inference_id, (x, key) in answered.items():
            served = responses[inference_id]
            assert served["httpCode"] == 200 and served["passthrough"] == {"k": [key]}
            side = 2 if key in canary_keys and x < 100 else 1  # sticky: a key's side is its hash's
            assert served["modelVersion"] == side, (x, key, served["modelVersion"])
        by_answer: dict[str, list] = {}
        for batch in (v for v in values if v.get("shadow")):
            assert batch["type"] == "response" and batch["modelVersion"] == 3 and batch["httpCode"] == 200
            offset = 0
            for inference_id, rows in zip(batch["answered"], batch["answeredRows"], strict=True):
                part = slice(offset, offset + rows)
                by_answer.setdefault(inference_id, []).append(
                    (
                        batch["outputs"]["sum"][part],
                        batch["passthrough"]["k"][part],
                        batch["responseTimestamp"],
                    )
                )
                offset += rows
            assert offset == len(batch["outputs"]["sum"])
        for inference_id, (x, key) in answered.items():
            ((scores, keys, scored_at),) = by_answer[inference_id]
            assert scores == [10 * (x + 1)] and keys == [key]
            assert scored_at >= responses[inference_id]["responseTimestamp"]
        failed = [v for v in responses.values() if v["modelVersion"] == 2 and v["httpCode"] == 400]
        assert len(failed) == fallbacks and all("x out of range" in v["error"] for v in failed)
    finally:
        serving.stop(project="mon")

    # the monitor windows the log by version; the canary rule reads them
    traffic = Traffic(topic, broker)
    traffic.call(1, started=time.time() + 3.5)  # moves the watermark past every window
    traffic.close()
    spec = MonitorSpec(project="mon", model_name=MODEL, topic=topic, window_seconds=2, lateness_seconds=1,
                       min_rows=100, prediction_output="sum", notify_airflow=False,
                       available_now=True)  # fmt: skip
    run(spec)
    before = _serving_files()
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.serve.canary_main", "--project", "mon", "--serving", MODEL,
         "--min-requests", "20"],
        cwd=REPO, env={**os.environ, "FJORD_CRASH_AT": "canary.decided"}, capture_output=True, text=True,
    )  # fmt: skip
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    assert _serving_files() == before  # killed after deciding, before changing: nothing changed

    result = decide(CanarySpec(project="mon", serving=MODEL, min_requests=20))
    assert result.decision == "rollback" and result.applied, result.summary()
    assert result.canary.requests >= 20 and result.canary.error_rate > 0.3 and result.stable.error_rate == 0
    assert "error rate" in result.reasons[0]
    after = serving.get_serving(MODEL, project="mon")
    assert after.labels == {"stable": 1, "shadow": 3} and after.canary_percent == 0
    record = get_run(result.run_id)
    assert record.status == "succeeded" and record.params["decision"]["decision"] == "rollback"
    assert {(a.kind, a.version) for a in record.inputs} == {("model", "2"), ("model", "1")}
    assert [(a.kind, a.version) for a in record.outputs] == [("deployment", "1")]
    again = decide(CanarySpec(project="mon", serving=MODEL, min_requests=20))
    assert again.decision == "none"


def _serving_files() -> dict[str, bytes]:
    from fjord.projects import get_project

    fs = get_project("mon").fs
    names = (serving.SERVINGS_FILE, serving.CONFIG_FILE, serving.ROUTING_FILE)
    return {name: fs.read_bytes(name) for name in names if fs.exists(name)}
