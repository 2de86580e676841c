"""The model server against TF Serving's REST and gRPC clients' expectations: real TensorFlow,
real SavedModels, real sockets; versions swapped while it serves; bad input answered 4xx."""

from __future__ import annotations

import base64
import json
import shutil

import httpx
import numpy as np
import pytest

from jobs.serve.config import ModelConfig, VersionPolicy, write_model_config
from tests.integration.serving_server import ServerProcess
from tests.serving_models import write_corrupt_version, write_version
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "m"
    write_version(base, 1)
    return base


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    monitoring = tmp_path_factory.mktemp("conf") / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    process = ServerProcess(
        "--model_name=m", f"--model_base_path={model_dir}", f"--monitoring_config_file={monitoring}",
        "--completion_marker=_SUCCESS",  # as Fjord's own servers run
        log=tmp_path_factory.mktemp("logs") / "server.log",
    )  # fmt: skip
    process.wait_ready("m")
    yield process
    assert process.stop() == 0


def post(server, path, body, **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=data, timeout=30, **kwargs)


def test_status_and_metadata_as_tf_serving_answers(server):
    status = httpx.get(f"{server.url}/v1/models/m")
    assert status.status_code == 200 and status.headers["content-type"] == "application/json"
    assert status.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert httpx.get(f"{server.url}/v1/models/m/versions/1").json() == status.json()
    metadata = httpx.get(f"{server.url}/v1/models/m/metadata").json()
    assert metadata["model_spec"] == {"name": "m", "version": "1", "signature_name": ""}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures["serving_default"]["inputs"]) == {"x", "y"}
    assert signatures["serving_default"]["outputs"]["sum"]["dtype"] == "DT_FLOAT"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_row_and_columnar_with_named_outputs(server):
    row = post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 2}, {"x": 3, "y": 0.5}]})
    assert row.status_code == 200, row.text
    assert row.json() == {"predictions": [{"diff": -1.0, "sum": 3.0}, {"diff": 2.5, "sum": 3.5}]}
    columnar = post(server, "/v1/models/m/versions/1:predict", b'{"inputs": {"x": [1, NaN], "y": [2, 1]}}')
    assert columnar.status_code == 200
    assert '"sum": [\n            3.0,\n            NaN\n        ]' in columnar.text  # NaN out as TF Serving
    echo = post(
        server,
        "/v1/models/m:predict",
        {"signature_name": "echo", "instances": [{"b64": base64.b64encode(b"\x00\xffab").decode()}, "hey"]},
    )
    assert echo.json()["predictions"][0] == {"length": 4, "same_bytes": {"b64": "AP9hYg=="}}
    assert echo.json()["predictions"][1]["length"] == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/m:predict", b"{oops", 400, "JSON Parse error"),
        (
            "/v1/models/m:predict",
            {"instances": [1], "inputs": [1]},
            400,
            "only one of 'inputs' or 'instances'",
        ),
        ("/v1/models/m:predict", {"signature": "x"}, 400, "Missing 'inputs' or 'instances' key"),
        ("/v1/models/m:predict", {"instances": [{"x": "a", "y": 1}]}, 400, "is not of expected type: float"),
        ("/v1/models/m:predict", {"inputs": {"x": [[1]], "y": [1]}}, 400, "shape [1,1] does not match"),
        ("/v1/models/m:predict", {"signature_name": "nope", "instances": [1]}, 400, 'name: "nope" not found'),
        ("/v1/models/m:predict", {"signature_name": "echo", "instances": [{"b64": "@@"}]}, 400, "base64"),
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/m/versions/9:predict", {"instances": [1]}, 404, "Specific(m, 9)"),
        (
            "/v1/models/m/labels/gold:predict",
            {"instances": [1]},
            400,
            "Unrecognized servable version label: gold",
        ),
        ("/v1/models/m:explain", {"instances": [1]}, 400, "Malformed request: POST /v1/models/m:explain"),
        ("/v1/models/m:classify", {"examples": [{"x": 1.0}]}, 400, "Expected classification signature"),
        ("/v1/models/m:regress", {"examples": []}, 400, "'examples' value is an empty array"),
        ("/v1/models/m:predict", {"instances": [{"x": 1.0, "y": 1.0}] * 100_001}, 400, "Task size 100001"),
        ("/v1/models/m/versions/" + "9" * 5_000 + ":predict", {"instances": [1]}, 400, "Failed to convert"),
        (
            "/v1/models/..%2F..%2Fm:predict",
            {"instances": [1]},
            400,
            "Malformed request: POST /v1/models/../../m",
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_an_error(server, path, body, status, message):
    answer = post(server, path, body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    if path.endswith(":predict") and "%2F" not in path and len(path) < 100:  # a call that was logged
        assert len(answer.headers["x-fjord-inference-id"]) == 32


def test_unknown_models_and_versions_in_status(server):
    assert httpx.get(f"{server.url}/v1/models/nope").status_code == 404
    missing = httpx.get(f"{server.url}/v1/models/m/versions/7")
    assert missing.status_code == 404 and missing.json() == {"error": "Could not find version 7 of model m"}
    assert httpx.get(f"{server.url}/v1/models").json() == {"error": "Missing model name in request."}
    huge = httpx.get(f"{server.url}/v1/models/m/versions/{'7' * 5_000}")
    assert huge.status_code == 400 and "Failed to convert version" in huge.json()["error"]


def test_grpc_refuses_a_huge_declared_tensor_and_a_config_reload_it_was_not_allowed(server):
    """A 30-byte tensor that declares a billion elements is INVALID_ARGUMENT before anything is
    allocated (the server serves on); HandleReloadConfigRequest, which would unload every model, is
    PERMISSION_DENIED on a server not started with --allow_reload_config."""
    import grpc
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def tensor(size: int, values: list[float]) -> tensor_pb2.TensorProto:
        shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size)])
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=values)

    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tensor(1_000_000_000, [1.0]))
        request.inputs["y"].CopyFrom(tensor(1_000_000_000, [1.0]))
        assert request.ByteSize() < 100
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "declares 1000000000 elements" in caught.value.details()
        request.inputs["x"].CopyFrom(tensor(3, [1.0, 2.0]))  # three declared, two given
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        request.inputs["x"].CopyFrom(tensor(2, [1.0, 2.0]))
        request.inputs["y"].CopyFrom(tensor(2, [1.0, 1.0]))
        served = stub.Predict(request, timeout=30).outputs["sum"]
        assert tf.make_ndarray(served).tolist() == [2.0, 3.0]  # still serving
        reload = model_management_pb2.ReloadConfigRequest()
        reload.config.model_config_list.config.add(name="other", base_path="/tmp")
        with pytest.raises(grpc.RpcError) as caught:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(reload, timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--allow_reload_config" in caught.value.details()
    assert _versions(server) == {1: "AVAILABLE"}


def test_prometheus_metrics_under_tf_serving_names(server):
    post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 2}]})
    text = httpx.get(f"{server.url}/monitoring/prometheus/metrics").text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"}' in text
    assert ":tensorflow:serving:request_latency_bucket{" in text


def test_grpc_clients_work_unchanged(server):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    with grpc.insecure_channel(server.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], dtype=np.float32)))
        request.inputs["y"].CopyFrom(tf.make_tensor_proto(np.array([0.5, 0.5], dtype=np.float32)))
        request.output_filter.append("sum")
        response = stub.Predict(request, timeout=30)
        assert list(response.outputs) == ["sum"] and response.model_spec.version.value == 1
        assert tf.make_ndarray(response.outputs["sum"]).tolist() == [1.5, 2.5]
        request.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "m"
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert [(v.version, v.state) for v in answer.model_version_status] == [(1, 30)]


def _versions(server, model="m"):
    return {
        int(v["version"]): v["state"]
        for v in httpx.get(f"{server.url}/v1/models/{model}").json().get("model_version_status", [])
    }


def test_versions_swap_only_when_complete_and_a_corrupt_one_never_replaces_a_good_one(server, model_dir):
    write_version(model_dir, 2, scale=10.0, marker=False)
    assert _versions(server) == {1: "AVAILABLE"}  # no _SUCCESS yet: not a candidate
    (model_dir / "2" / "_SUCCESS").write_text("{}")
    wait_for(lambda: _versions(server) == {1: "END", 2: "AVAILABLE"}, what="version 2 to replace 1")
    answer = post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 2}]})
    assert answer.json()["predictions"][0]["sum"] == 30.0
    write_corrupt_version(model_dir, 3)
    wait_for(lambda: _versions(server).get(3) == "END", what="version 3 to fail")
    status = httpx.get(f"{server.url}/v1/models/m/versions/3").json()["model_version_status"][0]
    assert status["status"]["error_code"] == "UNKNOWN" and status["status"]["error_message"]
    assert _versions(server)[2] == "AVAILABLE"
    assert post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 2}]}).status_code == 200
    shutil.rmtree(model_dir / "3")


def test_a_config_file_with_labels_a_token_and_batching(tmp_path):
    base = tmp_path / "models" / "m"
    write_version(base, 1)
    write_version(base, 2, scale=10.0)
    config = tmp_path / "models.config"
    write_model_config(
        config, [ModelConfig("m", str(base), VersionPolicy("specific", specific=(1,)), {"stable": 1})]
    )
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 5000 }\n")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = ServerProcess(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.3", "--enable_batching",
        f"--batching_parameters_file={batching}", f"--auth_token_file={token}", "--allow_reload_config",
        "--monitoring_config_file=/dev/null", log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        auth = {"Authorization": "Bearer s3cret"}
        wait_for(
            lambda: httpx.get(f"{server.url}/v1/models/m", headers=auth).status_code == 200,
            120,
            "ready",
            ignore=(httpx.HTTPError,),
        )
        assert httpx.get(f"{server.url}/v1/models/m").status_code == 401
        assert (
            httpx.get(f"{server.url}/v1/models/m", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        body = {"instances": [{"x": 1, "y": 2}]}
        assert post(server, "/v1/models/m/labels/stable:predict", body, headers=auth).json() == {
            "predictions": [{"diff": -1.0, "sum": 3.0}]
        }
        write_model_config(
            config,
            [
                ModelConfig(
                    "m", str(base), VersionPolicy("specific", specific=(1, 2)), {"stable": 1, "canary": 2}
                )
            ],
        )
        wait_for(
            lambda: post(server, "/v1/models/m/labels/canary:predict", body, headers=auth).status_code == 200,
            what="the canary label",
        )
        assert (
            post(server, "/v1/models/m/labels/canary:predict", body, headers=auth).json()["predictions"][0][
                "sum"
            ]
            == 30.0
        )
        # Concurrent requests share batches.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: post(server, "/v1/models/m/versions/1:predict", body, headers=auth), range(64)
                )
            )
        assert all(a.status_code == 200 for a in answers)
        big = post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 1}] * 33}, headers=auth)
        assert (
            big.status_code == 400 and "Task size 33 is larger than maximum input batch size 32" in big.text
        )
        _grpc_needs_the_token(server)
        _reload_over_grpc(server, base, auth)
    finally:
        assert server.stop() == 0


def test_warmup_requests_run_before_a_version_serves_and_a_bad_one_keeps_it_out(tmp_path):
    """TF Serving's assets.extra/tf_serving_warmup_requests (a TFRecord of PredictionLogs): a version
    whose warm-up fails never becomes AVAILABLE. The versions are plain ``tf.saved_model.save``
    exports, with no completion marker: with tensorflow_model_server's own flags they load, as there."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    def warmup(path, inputs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        for name, values in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.array(values, dtype=np.float32)))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        (path / "assets.extra").mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            writer.write(log.SerializeToString())

    base = tmp_path / "m"
    good = write_version(base, 1, marker=False)
    warmup(good, {"x": [1.0], "y": [2.0]})
    bad = write_version(base, 2, marker=False)
    warmup(bad, {"x": [1.0]})  # no y: the warm-up request fails
    server = ServerProcess("--model_name=m", f"--model_base_path={base}", log=tmp_path / "server.log")
    try:
        server.wait_ready("m")
        # Version 2, the latest, fails its warm-up; then the policy falls back to version 1.
        wait_for(lambda: _versions(server) == {1: "AVAILABLE", 2: "END"}, what="2 to fail and 1 to serve")
        status = httpx.get(f"{server.url}/v1/models/m/versions/2").json()["model_version_status"][0]
        assert status["status"]["error_code"] == "UNKNOWN" and status["status"]["error_message"]
        assert post(server, "/v1/models/m:predict", {"instances": [{"x": 1, "y": 2}]}).status_code == 200
    finally:
        assert server.stop() == 0


def _grpc_needs_the_token(server):
    """The REST token guards gRPC too: no or a wrong ``authorization`` metadata is UNAUTHENTICATED."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "m"
    with grpc.insecure_channel(server.grpc) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer nope")], [("authorization", "s3cret")]):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetModelStatus(status, timeout=30, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.GetModelStatus(status, timeout=30, metadata=[("authorization", "Bearer s3cret")])
        assert [v.version for v in answer.model_version_status] == [1, 2]  # stable and canary


def _reload_over_grpc(server, base, auth):
    """ModelService.HandleReloadConfigRequest: the server serves the new config's models at once."""
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add()
    model.name, model.base_path = "renamed", str(base)
    with grpc.insecure_channel(server.grpc) as channel:
        answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=120, metadata=[("authorization", auth["Authorization"])]
        )
    assert answer.status.error_code == 0, answer.status.error_message
    assert httpx.get(f"{server.url}/v1/models/renamed", headers=auth).json()["model_version_status"][0] == {
        "version": "2",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert httpx.get(f"{server.url}/v1/models/m", headers=auth).status_code == 404


def test_a_feature_view_request_is_filled_online_and_may_not_set_what_the_store_supplies(tmp_path):
    """``--feature_view``: a request with the view's key gets the stored features from the online
    store; one that also sets a stored feature is a 400 naming it, not a silent override; one that
    breaks an input rule (``--input_rules``, reject mode) is a 400 naming the instance, field and
    rule; every answer, refusals included, names its logged call."""
    import pandas as pd

    import featurestore
    from fjord.projects import create_project

    create_project("shop")
    store = featurestore.connect("shop")
    cards = store.get_or_create_feature_group(
        "cards", 1, primary_key=["cc_num"], event_time="as_of", online_enabled=True
    )
    cards.insert(
        pd.DataFrame({"cc_num": [7], "as_of": pd.to_datetime(["2026-11-01"], utc=True), "y": [10.0]})
    )
    store.get_or_create_feature_view("cards_serving", 1, query=cards.select(["y"]))
    base = tmp_path / "m"
    write_version(base, 1)
    rules = tmp_path / "requests.json"  # an expectation suite, as the ETL keeps them
    between = {"column": "x", "min_value": 0, "max_value": 10}
    in_set = {"column": "kind", "value_set": ["a", "b"]}
    rules.write_text(json.dumps({"expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": between, "on_failure": "quarantine"},
        {"type": "expect_column_values_to_be_in_set", "kwargs": in_set, "on_failure": "warn"},  # not applied
    ]}))  # fmt: skip
    server = ServerProcess(
        "--model_name=m", f"--model_base_path={base}", "--feature_view=shop/cards_serving/v1",
        f"--input_rules={rules}", log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        server.wait_ready("m")
        filled = post(server, "/v1/models/m:predict", {"instances": [{"cc_num": 7, "x": 1.0}]})
        assert filled.status_code == 200, filled.text
        assert filled.json()["predictions"] == [{"diff": -9.0, "sum": 11.0}]
        overriding = post(server, "/v1/models/m:predict", {"instances": [{"cc_num": 7, "x": 1.0, "y": 0.0}]})
        assert overriding.status_code == 400
        assert "the request sets y, which the online store supplies" in overriding.json()["error"]
        assert len(overriding.headers["x-fjord-inference-id"]) == 32
        broken = post(server, "/v1/models/m:predict", {"instances": [{"cc_num": 7, "x": 1.0, "kind": "z"},
                                                                       {"cc_num": 7, "x": -5}]})  # fmt: skip
        assert broken.status_code == 400 and broken.json()["error"] == (
            "the request breaks the requests input rules: instance 1: x -5 must be within [0, 10]"
        )
        _fuzz_the_feature_view_path(server)
    finally:
        assert server.stop() == 0


def _fuzz_the_feature_view_path(server) -> None:
    """300 generated instance lists through the online lookup: valid or not, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    value = scalar | st.lists(scalar, max_size=2) | st.dictionaries(st.text(max_size=3), scalar, max_size=2)
    instance = st.fixed_dictionaries(
        {"cc_num": st.sampled_from([7, 8]) | value}, optional={"x": value, "y": value, "other": value}
    )

    @given(instances=st.lists(instance, min_size=1, max_size=3))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_without_a_server_error(instances):
        answer = post(server, "/v1/models/m:predict", {"instances": instances})  # NaN tokens too
        assert answer.status_code < 500, (instances, answer.text)

    answers_without_a_server_error()
