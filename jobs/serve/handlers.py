"""What the REST and gRPC front ends share: the servable lookup, predict, classify and regress, the
status and metadata responses, metrics and inference logging for every call.

Both front ends call :class:`Handlers`; a failure is a :class:`ServingError` whose code each front end
turns into its own answer (an HTTP status and ``{"error": ...}``, or a gRPC status).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from jobs.serve.backends import CLASSIFY_METHOD, REGRESS_METHOD
from jobs.serve.errors import Code, ServingError, invalid
from jobs.serve.inference_log import InferenceLogger
from jobs.serve.input_rules import InputRules
from jobs.serve.metrics import Metrics
from jobs.serve.models import Loaded, ModelManager
from jobs.serve.passthrough import Passthrough
from jobs.serve.routing import CANARY, STABLE, Router
from jobs.serve.shadow import ShadowCall, ShadowScorer
from jobs.serve.tensors import TensorSpec

DEFAULT_SIGNATURE = "serving_default"
T = TypeVar("T")


@dataclass
class Call:
    """One predict call, as both front ends see it."""

    model: str
    version: int | None
    label: str | None
    signature: str
    api: str  # rest | grpc
    routed: str | None = None  # the label the router chose for a call that named none


class Handlers:
    """The server's request logic, independent of the wire."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        logger: InferenceLogger,
        *,
        timeout_s: float = 30.0,
        max_rows: int = 100_000,
        enrich: Callable[[str, dict[str, Any], list[str]], dict[str, Any]] | None = None,
        rules: InputRules | None = None,
        passthrough: Passthrough | None = None,
        router: Router | None = None,
    ) -> None:
        self.manager = manager
        self.router = router or Router(manager)
        self.shadows = ShadowScorer(logger, metrics)
        self.metrics = metrics
        self.logger = logger
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.enrich = enrich
        self.rules = rules
        self.passthrough = passthrough or Passthrough({})

    def servable(self, call: Call) -> tuple[Loaded, str]:
        loaded = self.manager.resolve(call.model, call.version, call.label)
        name = call.signature or DEFAULT_SIGNATURE
        if name not in loaded.backend.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return loaded, name

    async def run(
        self, loaded: Loaded, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        check_shapes(loaded.backend.signatures[signature].inputs, inputs)
        rows = max((a.shape[0] for a in inputs.values() if a.ndim), default=1)
        if rows > self.max_rows:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {self.max_rows}")
        future = loaded.submit(signature, inputs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    def record(
        self,
        call: Call,
        loaded: Loaded | None,
        started: float,
        wall_started: float,
        inputs: dict[str, np.ndarray] | None,
        outputs: dict[str, np.ndarray] | None,
        error: ServingError | None,
        inference_id: str | None = None,
        violations: list[dict[str, Any]] | None = None,
        passthrough: dict[str, list[Any]] | None = None,
    ) -> str:
        """Count the call and log it to Kafka (with the request's passthrough fields); its inference id."""
        status = error.code.name if error else "OK"
        self.metrics.request_count.inc(model_name=call.model, status=status)
        self.metrics.request_latency.observe(
            (time.perf_counter() - started) * 1e6,
            model_name=call.model,
            API="predict",
            entrypoint=call.api.upper(),
        )
        inference_id = inference_id or uuid.uuid4().hex
        if self.logger.enabled and loaded is not None:
            self.logger.log(
                inference_id, call.model, loaded.version, call.signature or DEFAULT_SIGNATURE, call.api,
                wall_started, inputs, outputs, error.code.http if error else 200,
                error.message if error else None, violations, passthrough,
            )  # fmt: skip
        if violations:
            self.metrics.input_violations.inc(len(violations), model_name=call.model)
        return inference_id

    async def answer_routed(self, call: Call, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` the call; a call routed to the canary that the canary fails (logged as the
        canary's by ``attempt``) is attempted again on stable: a canary never fails a client's call."""
        if call.routed == CANARY:
            try:
                return await attempt()
            except ServingError:
                self.metrics.canary_fallbacks.inc(model_name=call.model)
                call.label = call.routed = STABLE
        return await attempt()

    # -- the shadow: scored after the answer, in a thread of its own (jobs/serve/shadow.py) ---------

    def shadow(
        self,
        call: Call,
        answered: Loaded,
        signature: str,
        inputs: dict[str, np.ndarray],
        answered_id: str,
        passthrough: dict[str, list[Any]] | None,
    ) -> None:
        """Hand the inputs ``answered`` was given to the serving's shadow version, if it has one: it
        scores them later, off this call's path, and logs its outputs as the shadow's."""
        shadow = self.router.shadow(call.model, answered.version)
        if shadow is None:
            return
        spec = shadow.backend.signatures.get(signature)
        if spec is None:  # the shadow cannot score this call at all: logged as its failure, at once
            error = invalid(f'the shadow v{shadow.version} has no signature "{signature}"')
            rows = int(next(iter(inputs.values())).shape[0]) if inputs else 1
            self.metrics.shadow_requests.inc(model_name=call.model, status=error.code.name)
            if self.logger.enabled:
                self.logger.log_shadow(uuid.uuid4().hex, call.model, shadow.version, signature, call.api,
                                       time.time(), None, error.code.http, error.message, [answered_id],
                                       [rows], passthrough, 0.0)  # fmt: skip
            return
        wanted = {k: inputs[k] for k in spec.inputs if k in inputs}  # one it lacks: its error, logged
        waiting = ShadowCall(
            call.model, call.api, signature, shadow, wanted, answered_id, passthrough, time.time()
        )
        self.shadows.submit(waiting)

    def close(self) -> None:
        """Score what the shadow still holds (its records go to the log before the logger closes)."""
        self.shadows.close()

    # -- classify and regress: tf.Example inputs through a classify or regress signature -----------

    async def classify_or_regress(self, call: Call, examples: list[bytes], classify: bool) -> list[Any]:
        loaded, signature = self.servable(call)
        spec = loaded.backend.signatures[signature]
        method = CLASSIFY_METHOD if classify else REGRESS_METHOD
        if spec.method_name != method:
            kind = "classification" if classify else "regression"
            raise invalid(f"Expected {kind} signature method_name to be {method}. Was: {spec.method_name}")
        if len(spec.inputs) != 1:
            raise invalid(f"Expected one input Tensor. Got {len(spec.inputs)}")
        (name,) = spec.inputs
        serialized = np.empty(len(examples), dtype=object)
        serialized[:] = examples
        outputs = await self.run(loaded, signature, {name: serialized})
        if not classify:
            values = outputs.get("outputs")
            if values is None:
                raise invalid("No output Tensor named outputs found in signature")
            return [float(v) for v in np.asarray(values).reshape(len(examples))]
        scores, classes = outputs.get("scores"), outputs.get("classes")
        if scores is None and classes is None:
            raise invalid("Expected classification signature outputs to contain classes or scores")
        results = []
        for row in range(len(examples)):
            row_scores = np.asarray(scores[row]).ravel() if scores is not None else None
            row_classes = np.asarray(classes[row]).ravel() if classes is not None else None
            count = len(row_scores) if row_scores is not None else len(row_classes)  # type: ignore[arg-type]
            results.append(
                [
                    (
                        row_classes[i].decode() if row_classes is not None else "",
                        float(row_scores[i]) if row_scores is not None else 0.0,
                    )
                    for i in range(count)
                ]
            )
        return results


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_shapes(specs: dict[str, TensorSpec], inputs: dict[str, np.ndarray]) -> None:
    """Refuse an input whose rank or fixed dimensions differ from its signature's (a 400, before the
    model is called: TensorFlow's restored signatures broadcast some mismatches silently)."""
    for name, array in inputs.items():
        spec = specs.get(name)
        if spec is None or spec.shape is None:
            continue
        fits = len(array.shape) == len(spec.shape) and all(
            want < 0 or want == got for want, got in zip(spec.shape, array.shape, strict=True)
        )
        if not fits:
            raise invalid(
                f"input {name}: shape {_shape_text(array.shape)} does not match the signature's "
                f"{_shape_text(spec.shape)} (-1: any size)"
            )


def examples_from_json(doc: dict[str, Any]) -> list[bytes]:
    """Serialized tf.Examples of a :classify/:regress body (``examples``, merged with ``context``)."""
    from tensorflow.core.example import example_pb2

    context = doc.get("context")
    if "examples" not in doc:
        raise invalid("When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid("Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid("'examples' value is an empty array")
    base = example_pb2.Example()
    if context is not None:
        _fill_example(context, base)
    out = []
    for item in examples:
        example = example_pb2.Example()
        example.CopyFrom(base)
        _fill_example(item, example)
        out.append(example.SerializeToString())
    return out


def _fill_example(value: Any, example: Any) -> None:
    from jobs.serve.tensors import _b64, _is_b64, _json_type

    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            kind = feature.WhichOneof("kind")
            if isinstance(item, bool) or (isinstance(item, int) and not isinstance(item, bool)):
                if kind not in (None, "int64_list"):
                    raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind[:-5]}")
                if not -(2**63) <= int(item) < 2**63:
                    raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
                feature.int64_list.value.append(int(item))
            elif isinstance(item, float):
                if kind not in (None, "float_list"):
                    raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind[:-5]}")
                feature.float_list.value.append(item)
            elif isinstance(item, str) or _is_b64(item):
                if kind not in (None, "bytes_list"):
                    raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind[:-5]}")
                feature.bytes_list.value.append(_b64(item) if _is_b64(item) else item.encode())
            else:
                raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")
