"""The live shadow's scoring: off the served calls' path, in batches.

Each answered call whose serving has a ``shadow`` version hands its model inputs here (a deque
append) after its answer is built. One thread of its own takes the calls that gathered (every 20 ms,
up to ``max_batch`` rows at a time), runs the shadow once on their rows together, and logs one
response record for them (``"shadow": true``; ``"answered"``: their inference ids; ``"answeredRows"``:
their rows, in order; their passthrough fields, row by row; ``latencyMs``: the batch's model time;
``requestTimestamp``: the first call's). Calls are never delayed by it: when more than
``max_waiting`` calls wait (the shadow cannot keep up with saturating traffic), the next ones are not
shadowed, and counted in ``fjord_serving_shadow_skipped``: the shadow sheds load, the answers do not.
Measured: bench/shadow.py, docs/serving.md.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.serve.errors import ServingError

log = logging.getLogger("fjord.serve.shadow")
PAUSE_S = 0.02  # how long calls gather between the shadow's batches (its records are this much later)


@dataclass
class ShadowCall:
    model: str
    api: str
    signature: str
    shadow: Any  # the Loaded shadow version
    inputs: dict[str, np.ndarray]
    answered_id: str
    passthrough: dict[str, list[Any]] | None
    wall: float

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


class ShadowScorer:
    """The background scorer of a server's shadow versions."""

    def __init__(self, logger: Any, metrics: Any, *, max_waiting: int = 10_000, max_batch: int = 256) -> None:
        self.logger = logger
        self.metrics = metrics
        self.max_waiting = max_waiting
        self.max_batch = max_batch
        self._queue: deque[ShadowCall] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, call: ShadowCall) -> None:
        if len(self._queue) >= self.max_waiting:
            self.metrics.shadow_skipped.inc(model_name=call.model)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shadow", daemon=True)
            self._thread.start()
        self._queue.append(call)  # no wake-up: the thread looks every PAUSE_S, and takes a batch

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every submitted call is scored (a stopping server logs what it took)."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.drain()
        self._stop.set()

    def _loop(self) -> None:
        # Not niced: a thread the OS deschedules while it holds the GIL holds up every call (measured:
        # p99 4 -> 139 ms at nice 10); its cost is kept down by batching instead.
        while not self._stop.wait(PAUSE_S):  # calls gather meanwhile: one model run scores many
            while self._queue:
                batch = self._take()
                try:
                    self._score(batch)
                except Exception:  # a bug here must not stop the shadow (nor ever reach a client)
                    log.exception("shadow scoring failed for %d call(s)", len(batch))

    def _take(self) -> list[ShadowCall]:
        """Waiting calls of one shadow version, signature and input set, up to ``max_batch`` rows."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        kind = (id(first.shadow), first.signature, tuple(sorted(first.inputs)))
        while self._queue and rows < self.max_batch:
            head = self._queue[0]
            if (id(head.shadow), head.signature, tuple(sorted(head.inputs))) != kind:
                break
            batch.append(self._queue.popleft())
            rows += head.rows
        return batch

    def _score(self, batch: list[ShadowCall]) -> None:
        shadow, signature = batch[0].shadow, batch[0].signature
        started = time.perf_counter()
        try:
            joined = {name: np.concatenate([c.inputs[name] for c in batch]) for name in batch[0].inputs}
            outputs: dict[str, np.ndarray] | None = shadow.backend.run(signature, joined)
            error = None
        except ServingError as exc:
            if len(batch) > 1:  # one call's rows spoil the batch: each on its own, so each gets its own
                for call in batch:
                    self._score([call])
                return
            outputs, error = None, exc
        latency_s = time.perf_counter() - started
        status = error.code.name if error else "OK"
        self.metrics.shadow_requests.inc(len(batch), model_name=batch[0].model, status=status)
        if not self.logger.enabled:
            return
        names = sorted({name for call in batch for name in call.passthrough or {}})
        passthrough = {
            name: [v for call in batch for v in (call.passthrough or {}).get(name, [None] * call.rows)]
            for name in names
        }
        self.logger.log_shadow(
            uuid.uuid4().hex, batch[0].model, shadow.version, signature, batch[0].api, batch[0].wall, outputs,
            error.code.http if error else 200, error.message if error else None,
            [call.answered_id for call in batch], [call.rows for call in batch], passthrough, latency_s,
        )  # fmt: skip
