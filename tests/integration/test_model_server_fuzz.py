"""The REST API fuzzed from its OpenAPI description (jobs/serve/openapi.yaml) with schemathesis:
whatever the generated request, valid or not, the server answers without a 5xx, with JSON."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import REPO
from tests.integration.serving_server import ServerProcess
from tests.serving_models import write_version

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_path(str(REPO / "jobs" / "serve" / "openapi.yaml"))


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "m"
    write_version(base, 1)
    process = ServerProcess(
        "--model_name=m", f"--model_base_path={base}", "--max_body_bytes=1000000",
        log=tmp_path_factory.mktemp("fuzz-logs") / "server.log",
    )  # fmt: skip
    process.wait_ready("m")
    yield process
    assert process.stop() == 0


# One test per API operation, with the operation in its id: schemathesis' own parametrize gives every
# operation the same node id, and pytest-xdist's grouped scheduling keys work by node id, so it ran
# one operation of nine.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_request_gets_a_server_error(operation, fuzzed_server):
    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_without_a_server_error(case):
        response = case.call(base_url=fuzzed_server.url, timeout=30)
        assert response.status_code < 500, (case.path, case.body, response.text)
        assert "error" in response.json() or response.status_code == 200

    answers_without_a_server_error()


# -- gRPC: the same promise, over PredictionService's four calls ------------------------------------

GRPC_EXAMPLES = 500
NAMES = ["x", "y", "text_bytes", "z", ""]


def _grpc_strategies():
    """Requests of every shape a client could send: known and unknown models, versions, labels and
    signatures; tensors of any dtype (valid or not), declared shapes that do or do not fit their
    values, huge declared sizes; tf.Examples of any feature kinds."""
    from hypothesis import strategies as st
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        input_pb2,
        model_pb2,
        predict_pb2,
        regression_pb2,
    )

    def spec(name, choice, version, label, signature):
        out = model_pb2.ModelSpec(name=name, signature_name=signature)
        if choice == "version":
            out.version.value = version
        elif choice == "label":
            out.version_label = label
        return out

    specs = st.builds(
        spec,
        st.sampled_from(["m", "nope", ""]) | st.text(max_size=8),
        st.sampled_from(["none", "version", "label"]),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=6),
        st.sampled_from(["", "serving_default", "echo", "nope"]),
    )

    def tensor(dtype, dims, floats, ints, strings, content):
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
        )
        out = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, float_val=floats, int_val=ints)
        out.string_val.extend(strings)
        if content is not None:
            out.tensor_content = content
        return out

    tensors = st.builds(
        tensor,
        st.integers(0, 30),  # every DataType, DT_INVALID and a few that do not exist
        st.lists(st.integers(-2, 4) | st.sampled_from([0, 10**9, 2**62]), max_size=3),
        st.lists(st.floats(width=32), max_size=6),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6),
        st.lists(st.binary(max_size=8), max_size=4),
        st.none() | st.binary(max_size=24),
    )

    def predict(model_spec, inputs, output_filter):
        out = predict_pb2.PredictRequest(model_spec=model_spec, output_filter=output_filter)
        for name, value in inputs.items():
            out.inputs[name].CopyFrom(value)
        return out

    feature = st.one_of(
        st.builds(
            lambda v: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=v)),
            st.lists(st.floats(width=32), max_size=3),
        ),
        st.builds(
            lambda v: feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=v)),
            st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
        ),
        st.builds(
            lambda v: feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=v)),
            st.lists(st.binary(max_size=6), max_size=3),
        ),
        st.just(feature_pb2.Feature()),
    )
    examples = st.lists(
        st.builds(
            lambda fs: example_pb2.Example(features=feature_pb2.Features(feature=fs)),
            st.dictionaries(st.sampled_from(NAMES), feature, max_size=3),
        ),
        max_size=4,
    )

    def model_input(kind, items, context):
        if kind == "list":
            return input_pb2.Input(example_list=input_pb2.ExampleList(examples=items))
        if kind == "context":
            return input_pb2.Input(
                example_list_with_context=input_pb2.ExampleListWithContext(examples=items, context=context)
            )
        return input_pb2.Input()

    inputs = st.builds(model_input, st.sampled_from(["list", "context", "empty"]), examples,
                       examples.map(lambda e: e[0] if e else example_pb2.Example()))  # fmt: skip
    return {
        "Predict": st.builds(
            predict,
            specs,
            st.dictionaries(st.sampled_from(NAMES), tensors, max_size=3),
            st.lists(st.sampled_from(["sum", "diff", "nope"]), max_size=2),
        ),
        "Classify": st.builds(
            lambda s, i: classification_pb2.ClassificationRequest(model_spec=s, input=i), specs, inputs
        ),
        "Regress": st.builds(
            lambda s, i: regression_pb2.RegressionRequest(model_spec=s, input=i), specs, inputs
        ),
        "GetModelMetadata": st.builds(
            lambda s, f: get_model_metadata_pb2.GetModelMetadataRequest(model_spec=s, metadata_field=f),
            specs,
            st.lists(st.sampled_from(["signature_def", "nope", ""]), max_size=2),
        ),
    }


@pytest.mark.parametrize("method", ["Predict", "Classify", "Regress", "GetModelMetadata"])
def test_no_grpc_call_gets_internal_or_unknown(method, fuzzed_server):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server_errors = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
    seen: dict[str, int] = {}
    with grpc.insecure_channel(fuzzed_server.grpc) as channel:
        call = getattr(prediction_service_pb2_grpc.PredictionServiceStub(channel), method)

        @given(request=_grpc_strategies()[method])
        @settings(max_examples=GRPC_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_without_a_server_error(request):
            try:
                call(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                assert code not in server_errors, (request, exc.details())
            seen[code.name] = seen.get(code.name, 0) + 1

        answers_without_a_server_error()
    assert sum(seen.values()) >= GRPC_EXAMPLES and seen.get("INVALID_ARGUMENT", 0) > 0, (
        seen
    )  # it got past lookup
    assert fuzzed_server.process.poll() is None  # alive after it all
