"""The REST API, as TF Serving's ``http_rest_api_handler.cc`` answers it, as a raw ASGI app.

Routes (case-insensitive, as TF Serving's regular expressions):

- ``GET /v1/models/{name}[/versions/{v}|/labels/{l}]``: version status;
- ``GET /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``: ``model_spec`` and signature defs;
- ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)``;
- ``GET <monitoring path>``: Prometheus metrics (with ``--monitoring_config_file``).

No web framework sits between uvicorn and these handlers: routing is two regular expressions, and a
framework's request objects, middleware and validation would cost more per call than the model
(``docs/serving.md``). With a bearer token configured, every route but the metrics needs it (401).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jobs.serve.errors import Code, ServingError, invalid
from jobs.serve.handlers import Call, Handlers, examples_from_json
from jobs.serve.routing import key_of
from jobs.serve.status import metadata_json, status_json
from jobs.serve.tensors import error_response, parse_body, predict_inputs, predict_response, results_response
from jobs.serve.tensors import signature_name as read_signature_name

PREDICTION = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I
)
STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)
log = logging.getLogger("fjord.serve")
INFERENCE_ID_HEADER = b"x-fjord-inference-id"
JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_VERSION = 2**63 - 1

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def _version(text: str | None) -> int | None:
    if not text:
        return None
    if len(text) > len(str(MAX_VERSION)) or int(text) > MAX_VERSION:  # no 5,000-digit int() at all
        raise invalid(f"Failed to convert version: {text[:30]} to numeric.")
    return int(text)


class RestApp:
    """The ASGI application."""

    def __init__(
        self,
        handlers: Handlers,
        *,
        token: str | None = None,
        metrics_path: str | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.handlers = handlers
        self.token = f"Bearer {token}".encode() if token else None
        self.metrics_path = metrics_path
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if self.metrics_path is not None and path == self.metrics_path and method == "GET":
            text = self.handlers.metrics.exposition().encode()
            await _reply(send, 200, text, [(b"content-type", b"text/plain; version=0.0.4")])
            return
        if self.token is not None and not self._authorized(scope):
            await _reply(
                send, 401, error_response("Unauthenticated: a valid bearer token is required").encode()
            )
            return
        headers = JSON_HEADERS
        after: list[Callable[[], None]] = []  # what runs once the answer is sent (the shadow)
        try:
            body = await self._body(receive, scope)
            status, text, inference_id = await self._route(method, path, body, after)
            if inference_id:  # which inference log records are this call's (the body stays TF Serving's)
                headers = [*JSON_HEADERS, (INFERENCE_ID_HEADER, inference_id.encode())]
        except ServingError as exc:
            status, text = exc.code.http, error_response(exc.message)
            if exc.inference_id:  # a refused predict is logged too: the client can name it
                headers = [*JSON_HEADERS, (INFERENCE_ID_HEADER, exc.inference_id.encode())]
        except Exception as exc:  # a bug: answered, logged, and the server goes on
            log.exception("internal error answering %s %s", method, path)
            status, text = 500, error_response(f"Internal: {type(exc).__name__}: {exc}")
        await _reply(send, status, text.encode(), headers)
        for task in after:
            task()

    def _authorized(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.token or b"")
        return False

    async def _body(self, receive: Receive, scope: dict[str, Any]) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise ServingError(Code.INVALID_ARGUMENT, f"Request body exceeds {self.max_body_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ServingError(Code.INVALID_ARGUMENT, f"Request body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _route(
        self, method: str, path: str, body: bytes, after: list[Callable[[], None]]
    ) -> tuple[int, str, str | None]:
        if method == "POST" and (match := PREDICTION.fullmatch(path)):
            name, version, label, verb = match.groups()
            call = Call(name, _version(version), label, "", "rest")
            verb = verb.lower()
            if verb == "predict":
                return 200, *(await self._predict(call, body, after))
            doc = parse_body(body)
            call.signature = read_signature_name(doc)
            results = await self.handlers.classify_or_regress(
                call, examples_from_json(doc), verb == "classify"
            )
            return 200, results_response(results, verb == "classify"), None
        if method == "GET" and (match := STATUS.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            if metadata:
                return 200, metadata_json(self.handlers.manager, name, _version(version), label), None
            return 200, status_json(self.handlers.manager, name, _version(version), label), None
        if path.lower().startswith("/v1/"):
            raise invalid(f"Malformed request: {method} {path}")
        raise ServingError(Code.NOT_FOUND, f"Not found: {method} {path}")

    async def _predict(self, call: Call, body: bytes, after: list[Callable[[], None]]) -> tuple[str, str]:
        started, wall = time.perf_counter(), time.time()
        try:
            doc = parse_body(body)
            call.signature = read_signature_name(doc)
            key = self.handlers.router.split_key(call.model)
            self.handlers.router.route(call, key_of(doc, key) if key else None)
        except ServingError as exc:
            exc.inference_id = self.handlers.record(call, None, started, wall, None, None, exc)
            raise
        parsed = [doc]  # a second attempt (on stable) reads the body as it came: the first took fields
        return await self.handlers.answer_routed(
            call,
            lambda: self._answer(call, parsed.pop() if parsed else parse_body(body), started, wall, after),
        )

    async def _answer(
        self, call: Call, doc: Any, started: float, wall: float, after: list[Callable[[], None]]
    ) -> tuple[str, str]:
        loaded, inputs, outputs, violations, keys = None, None, None, [], None
        try:
            loaded, signature = self.handlers.servable(call)
            keys = self.handlers.passthrough.take(call.model, doc)  # logged, never the model's
            if self.handlers.rules is not None:  # reject mode: a 400 here, before any lookup
                violations = self.handlers.rules.check(doc)
            if self.handlers.enrich is not None:
                doc = self.handlers.enrich(call.model, doc, list(loaded.backend.signatures[signature].inputs))
            inputs, fmt = predict_inputs(doc, loaded.backend.signatures[signature].inputs)
            outputs = await self.handlers.run(loaded, signature, inputs)
            text = predict_response(outputs, fmt)
        except ServingError as exc:
            exc.inference_id = self.handlers.record(
                call, loaded, started, wall, inputs, None, exc, passthrough=keys
            )
            raise
        inference_id = self.handlers.record(
            call, loaded, started, wall, inputs, outputs, None, violations=violations, passthrough=keys
        )
        after.append(lambda: self.handlers.shadow(call, loaded, signature, inputs, inference_id, keys))
        return text, inference_id


async def _reply(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
