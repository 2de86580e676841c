"""How a loaded version runs requests: at once, or batched across concurrent requests.

:class:`DirectRunner` runs each request's arrays on a thread pool (no global lock: TensorFlow runs
calls in parallel, releasing the GIL), or, for a backend whose call costs less than the hop to a
thread (the TFLite interpreter: about 0.09 ms a row), on the caller's own thread.

:class:`Batcher` is TF Serving's dynamic batching (``--enable_batching``): requests of the same
signature and inner shapes queue together; a batch closes at ``max_batch_size`` rows or
``batch_timeout_micros`` after its first request, is padded up to the next ``allowed_batch_sizes``
entry, runs on one of ``num_batch_threads`` threads, and each request gets its own rows back. A
request larger than a batch is refused (400), and a full queue (``max_enqueued_batches`` batches
waiting) is answered 503, as TF Serving answers both.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from jobs.serve.backends import ModelBackend
from jobs.serve.config import BatchingParameters
from jobs.serve.errors import Code, ServingError, invalid
from jobs.serve.metrics import Metrics


class DirectRunner:
    """Each request on its own, on a shared thread pool."""

    def __init__(self, backend: ModelBackend, pool: ThreadPoolExecutor) -> None:
        self.backend = backend
        self.pool = pool

    def submit(self, signature: str, inputs: dict[str, np.ndarray]) -> Future[dict[str, np.ndarray]]:
        if not self.backend.inline:
            return self.pool.submit(self.backend.run, signature, inputs)
        # A call cheaper than a thread hop runs on the caller's thread: no queue, no GIL hand-over.
        done: Future[dict[str, np.ndarray]] = Future()
        try:
            done.set_result(self.backend.run(signature, inputs))
        except BaseException as exc:
            done.set_exception(exc)
        return done

    def stop(self) -> None:
        """Nothing of its own to stop: the pool is the server's."""


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future[dict[str, np.ndarray]] = field(default_factory=Future)


@dataclass
class _Queue:
    signature: str
    tasks: deque[_Task] = field(default_factory=deque)
    rows: int = 0
    opened: float = 0.0  # when its oldest waiting task arrived


class Batcher:
    """Dynamic batching of one loaded version's requests."""

    def __init__(
        self, backend: ModelBackend, params: BatchingParameters, metrics: Metrics, model: str
    ) -> None:
        self.backend = backend
        self.params = params
        self.metrics = metrics
        self.model = model
        self._queues: dict[tuple[object, ...], _Queue] = {}
        self._cond = threading.Condition()
        self._waiting_rows = 0
        self._stopping = False
        self._pool = ThreadPoolExecutor(params.num_batch_threads, thread_name_prefix=f"batch-{model}")
        self._thread = threading.Thread(target=self._schedule, name=f"batcher-{model}", daemon=True)
        self._thread.start()

    def submit(self, signature: str, inputs: dict[str, np.ndarray]) -> Future[dict[str, np.ndarray]]:
        rows = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
        if len(rows) != 1 or -1 in rows:
            # Batching needs one batch dimension shared by every input; let the model say what is wrong.
            return self._pool.submit(self.backend.run, signature, inputs)
        (count,) = rows
        if count > self.params.max_batch_size:
            raise invalid(
                f"Task size {count} is larger than maximum input batch size {self.params.max_batch_size}"
            )
        key = (signature, *sorted((n, a.shape[1:], a.dtype.str) for n, a in inputs.items()))
        task = _Task(inputs, count)
        with self._cond:
            limit = self.params.max_enqueued_batches * self.params.max_batch_size
            if self._stopping or self._waiting_rows + count > limit:
                raise ServingError(
                    Code.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
                )
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(signature)
            if not queue.tasks:
                queue.opened = time.monotonic()
            queue.tasks.append(task)
            queue.rows += count
            self._waiting_rows += count
            self.metrics.queue_depth.set(self._waiting_rows, model_name=self.model)
            self._cond.notify()
        return task.future

    def _ready(self, now: float) -> tuple[tuple[object, ...], float] | None:
        """The queue whose batch should close now, or the time until the earliest one closes."""
        timeout = self.params.batch_timeout_micros / 1e6
        earliest = None
        for key, queue in self._queues.items():
            if not queue.tasks:
                continue
            due = queue.opened + timeout
            if queue.rows >= self.params.max_batch_size or due <= now or self._stopping:
                return key, 0.0
            earliest = due if earliest is None else min(earliest, due)
        return None if earliest is None else ((), earliest - now)

    def _schedule(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready = self._ready(time.monotonic())
                    if ready is not None and ready[0]:
                        break
                    if self._stopping and ready is None:
                        return
                    self._cond.wait(None if ready is None else ready[1])
                queue = self._queues[ready[0]]
                batch, rows = [], 0
                while queue.tasks and rows + queue.tasks[0].rows <= self.params.max_batch_size:
                    task = queue.tasks.popleft()
                    batch.append(task)
                    rows += task.rows
                queue.rows -= rows
                queue.opened = time.monotonic()
                self._waiting_rows -= rows
                self.metrics.queue_depth.set(self._waiting_rows, model_name=self.model)
            self._pool.submit(self._run, queue.signature, batch, rows)

    def _padded(self, rows: int) -> int:
        return next((size for size in self.params.allowed_batch_sizes if size >= rows), rows)

    def _run(self, signature: str, batch: list[_Task], rows: int) -> None:
        size = self._padded(rows)
        self.metrics.batch_size.observe(size, model_name=self.model)
        names = list(batch[0].inputs)
        merged = {}
        for name in names:
            parts = [task.inputs[name] for task in batch]
            if size > rows:  # pad with copies of the first row, as TF Serving pads
                parts.append(np.repeat(parts[0][:1], size - rows, axis=0))
            merged[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        try:
            outputs = self.backend.run(signature, merged)
        except BaseException as exc:
            for task in batch:
                task.future.set_exception(exc)
            return
        start = 0
        for task in batch:
            end = start + task.rows
            task.future.set_result({name: value[start:end] for name, value in outputs.items()})
            start = end

    def stop(self) -> None:
        """Run what is queued, then stop the scheduler and the batch threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)
