"""The gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService``, on grpc.aio, with the
servicers tensorflow-serving-api generates, so any TF Serving gRPC client works unchanged."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Any

import grpc

from jobs.serve.errors import Code, ServingError
from jobs.serve.handlers import Call, Handlers
from jobs.serve.status import metadata_proto, status_proto


def _spec(request: Any, api: str = "grpc") -> Call:
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    return Call(
        spec.name,
        spec.version.value if choice == "version" else None,
        spec.version_label if choice == "version_label" else None,
        spec.signature_name,
        api,
    )


async def _abort(context: Any, exc: ServingError) -> None:
    code = next(c for c in grpc.StatusCode if c.value[0] == exc.code.grpc)
    await context.abort(code, exc.message)


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except ServingError as exc:
            await _abort(context, exc)

    return wrapper


class BearerToken(grpc.aio.ServerInterceptor):
    """Every call carries ``authorization: Bearer <token>`` metadata, or is refused UNAUTHENTICATED
    (the REST API's rule, on the same token)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def refuse(_request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        for key, value in details.invocation_metadata or ():
            given = value.encode() if isinstance(value, str) else value
            if key == "authorization" and hmac.compare_digest(given, self._expected):
                return await continuation(details)
        return self._refusal


def decode_tensor(name: str, proto: Any, max_elements: int) -> Any:
    """``proto`` as an array, its declared shape checked first: a few bytes that declare a billion
    elements are refused before anything is allocated."""
    import tensorflow as tf

    shape = proto.tensor_shape
    dims = [d.size for d in shape.dim]
    if shape.unknown_rank or any(d < 0 for d in dims):
        raise ServingError(Code.INVALID_ARGUMENT, f"input {name}: the tensor's shape must be fully known")
    elements = math.prod(dims)
    if elements > max_elements:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f"input {name} declares {elements} elements; a request holds at most {max_elements}",
        )
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError, KeyError) as exc:
        raise ServingError(Code.INVALID_ARGUMENT, f"input {name}: {str(exc).splitlines()[0]}") from None


def _first_value(request: Any, name: str, max_elements: int) -> Any:
    """The first element of input ``name`` of a PredictRequest (None: absent or unreadable)."""
    import numpy as np

    if name not in request.inputs:
        return None
    try:
        values = np.asarray(decode_tensor(name, request.inputs[name], max_elements)).ravel()[:1].tolist()
    except ServingError:
        return None  # the call fails on its own inputs, wherever it goes
    if not values:
        return None
    return values[0].decode(errors="replace") if isinstance(values[0], bytes) else values[0]


def servicers(
    handlers: Handlers, reload_config: Callable[[Any], None] | None, *, max_elements: int = 64 * 2**20
) -> list[tuple[Any, Callable[..., Any]]]:
    """(servicer, add-to-server function) pairs for a grpc.aio server; ``reload_config`` None refuses
    HandleReloadConfigRequest (it replaces every served model)."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
        status_pb2,
    )

    async def answer(call: Any, request: Any, started: float, wall: float) -> Any:
        loaded, inputs, outputs, keys, signature = None, None, None, None, ""
        try:
            loaded, signature = handlers.servable(call)
            call.signature = signature
            tensors = dict(request.inputs)
            keys = handlers.passthrough.take_tensors(  # logged, never the model's
                call.model, tensors, lambda k, v: decode_tensor(k, v, max_elements)
            )
            expected = loaded.backend.signatures[signature].inputs
            unknown = sorted(set(tensors) - set(expected))
            missing = sorted(set(expected) - set(tensors))
            if unknown or missing:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"input size does not match signature: {len(tensors)}!={len(expected)} len("
                    f"{{{','.join(sorted(tensors))}}}). Missing {missing}, unexpected {unknown}",
                )
            inputs = {k: decode_tensor(k, v, max_elements) for k, v in tensors.items()}
            violations = handlers.rules.check({"inputs": _plain(inputs)}) if handlers.rules else []
            outputs = await handlers.run(loaded, signature, inputs)
        except ServingError as exc:
            handlers.record(call, loaded, started, wall, inputs, None, exc, passthrough=keys)
            raise
        inference_id = handlers.record(
            call, loaded, started, wall, inputs, outputs, None, violations=violations, passthrough=keys
        )
        handlers.shadow(call, loaded, signature, inputs, inference_id, keys)  # scored once this returns
        wanted = set(request.output_filter) or set(outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = call.model
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature
        for name in sorted(wanted):
            if name not in outputs:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"output tensor alias not found in signature: {name}"
                )
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @_guarded
        async def Predict(self, request: Any, context: Any) -> Any:
            call = _spec(request)
            started, wall = time.perf_counter(), time.time()
            key = handlers.router.split_key(call.model)
            handlers.router.route(call, _first_value(request, key, max_elements) if key else None)
            return await handlers.answer_routed(call, lambda: answer(call, request, started, wall))

        @_guarded
        async def Classify(self, request: Any, context: Any) -> Any:
            results = await handlers.classify_or_regress(_spec(request), _examples(request.input), True)
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = request.model_spec.name
            for classes in results:
                out = response.result.classifications.add()
                for label, score in classes:
                    out.classes.add(label=label, score=score)
            return response

        @_guarded
        async def Regress(self, request: Any, context: Any) -> Any:
            results = await handlers.classify_or_regress(_spec(request), _examples(request.input), False)
            response = regression_pb2.RegressionResponse()
            response.model_spec.name = request.model_spec.name
            for value in results:
                response.result.regressions.add(value=value)
            return response

        @_guarded
        async def GetModelMetadata(self, request: Any, context: Any) -> Any:
            call = _spec(request)
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError(Code.INVALID_ARGUMENT, "Metadata field signature_def is the one supported")
            return metadata_proto(handlers.manager, call.model, call.version, call.label)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @_guarded
        async def GetModelStatus(self, request: Any, context: Any) -> Any:
            call = _spec(request)
            return status_proto(handlers.manager, call.model, call.version, call.label)

        async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
            if reload_config is None:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "HandleReloadConfigRequest is off: it replaces every served model; start the server "
                    "with --allow_reload_config (and --auth_token_file) to allow it",
                )
            response = model_management_pb2.ReloadConfigResponse()
            try:
                reload_config(request.config)
                response.status.CopyFrom(status_pb2.StatusProto(error_code=0))
            except Exception as exc:
                response.status.CopyFrom(status_pb2.StatusProto(error_code=3, error_message=str(exc)))
            return response

    return [
        (PredictionService(), prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server),
        (ModelService(), model_service_pb2_grpc.add_ModelServiceServicer_to_server),
    ]


def _plain(inputs: dict[str, Any]) -> dict[str, list[Any]]:
    """Tensors as the input rules read a columnar body: one value per row, text as str."""
    out = {}
    for name, array in inputs.items():
        if array.ndim == 0:
            values = [array.item()]
        elif array.size == 0:
            values = []
        else:  # a row's first value: the rules are about scalar fields
            values = array.reshape(array.shape[0], -1)[:, 0].tolist()
        out[name] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values]
    return out


def _examples(model_input: Any) -> list[bytes]:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        context = model_input.example_list_with_context.context
        out = []
        for example in model_input.example_list_with_context.examples:
            merged = type(example)()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            out.append(merged.SerializeToString())
        return out
    raise ServingError(Code.INVALID_ARGUMENT, "Input is empty")
