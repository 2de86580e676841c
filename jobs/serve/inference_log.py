"""Inference logging: every request and its response as records on a Kafka topic, never in the way.

Modes are Hopsworks' names: ``ALL`` (a request record and a response record), ``MODEL_INPUTS`` (the
request only), ``PREDICTIONS`` (the response only), ``NONE``. Both records of one call carry the same
key, its ``inferenceId``, so a consumer joins them by key (and the topic's partitioner puts them on
the same partition, in order). A record is JSON::

    {"inferenceId": "7f0c...", "type": "request" | "response", "modelName": "fraud",
     "modelVersion": 3, "signatureName": "serving_default", "api": "rest" | "grpc",
     "requestTimestamp": 1764750000123, "responseTimestamp": 1764750000125 (response only),
     "latencyMs": 1.7 (response only), "httpCode": 200 (response only),
     "inputs": {...} (request), "outputs": {...} (response, when it succeeded), "error": "..." (when not),
     "passthrough": {"tid": ["t-81"]} (both, when the serving names passthrough fields and the request
     carries them: jobs/serve/passthrough.py),
     "shadow": true, "answered": ["<inferenceId>", ...], "answeredRows": [1, ...] (a shadow version's
     scoring of a batch of answered calls: a response record only, whose rows are those calls' rows
     in order; their inputs are in the calls' own request records: jobs/serve/shadow.py)}

Timestamps are milliseconds since the epoch (UTC). ``inputs``/``outputs`` are columnar: name -> list
of rows.

Sending is asynchronous and bounded: a call only appends to an in-memory queue (``queue_size``
records). A thread hands the records to the Kafka producer, which batches them. A slow, absent or
restarting broker therefore never slows or fails a prediction. The producer is librdkafka's
(confluent-kafka): it encodes, batches and sends in C threads, off the GIL the server's calls need;
kafka-python's pure-Python producer cost the server 47% of its throughput (docs/serving.md, "What
logging costs"). The rest of the platform keeps kafka-python.

**The guarantee.** Every record is delivered at least once while the server runs and its queue has
room: the producer waits for all in-sync replicas (``acks=all``, idempotent, retrying for up to
``delivery_timeout_ms``), and a record it could not deliver, or could not hand over because the broker
is away, goes back to the queue and is sent again when the broker returns. A broker restart under load
therefore loses nothing (a 20 s restart is tested). Records are lost only when the queue is full (100k
records: about a minute of an outage at 1,600 calls/s) or when the server stops while the broker is
away (it tries for 10 s); both are counted in ``fjord_serving_inference_log_dropped``, and the first
drop of a streak is logged, not every one. The idempotent producer keeps its own retries from
writing twice; a record requeued after a delivery that timed out may, rarely, arrive twice, so a
consumer that must count exactly keys on ``inferenceId`` and ``type``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaException

from jobs.serve.metrics import Metrics

log = logging.getLogger("fjord.serve.log")

MODES = ("ALL", "PREDICTIONS", "MODEL_INPUTS", "NONE")
DRAIN_S = 0.01  # how often the send thread hands queued records to librdkafka (which lingers 20 ms)


def default_topic(model: str) -> str:
    """The inference log topic of a model, unless configured otherwise."""
    return f"{model}_inference_log"


_NATIVE = {np.dtype(t) for t in ("float64", "float32", "int64", "int32", "bool")}  # orjson writes these


def _columns(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The arrays as the record's columns: numeric ones as they are (orjson encodes a contiguous
    array as the nested list ``tolist`` makes, NaN as null, without the Python list in between),
    text decoded."""
    out: dict[str, Any] = {}
    for name, array in arrays.items():
        if array.dtype in _NATIVE and array.flags.c_contiguous:
            out[name] = array
        elif array.dtype == object:
            out[name] = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.tolist()]
        else:
            out[name] = array.tolist()
    return out


class InferenceLogger:
    """Sends inference records to Kafka from a background thread."""

    def __init__(
        self,
        mode: str,
        topic_for: Any,
        metrics: Metrics,
        *,
        queue_size: int = 100_000,
        bootstrap_servers: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"inference logging mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        self.topic_for = topic_for
        self.metrics = metrics
        self.bootstrap_servers = bootstrap_servers
        self._queue: deque[tuple[str, bytes, bytes]] = deque()
        self._size = queue_size
        self._stop = threading.Event()
        self._dropping = False
        self._retrying = False  # a record came back from the producer: wait before sending again
        self._give_up_at = float("inf")  # once stopping: when to drop what the broker did not take
        self._topics: set[str] = set()
        self._produced = self._failures = self._counted = 0  # records handed to librdkafka, failed, counted
        self._fatal: str | None = None  # librdkafka's fatal error: the producer must be replaced
        self._thread: threading.Thread | None = None
        if mode != "NONE":
            self._thread = threading.Thread(target=self._send_loop, name="inference-log", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.mode != "NONE"

    def log(
        self,
        inference_id: str,
        model: str,
        version: int,
        signature: str,
        api: str,
        started: float,
        inputs: dict[str, np.ndarray] | None,
        outputs: dict[str, np.ndarray] | None,
        http_code: int,
        error: str | None = None,
        violations: list[dict[str, Any]] | None = None,
        passthrough: dict[str, list[Any]] | None = None,
    ) -> None:
        """Queue the records of one call (``started``: its wall-clock start, in seconds). Input-rule
        ``violations`` of a flagged request go with its response record (with its request record when
        only inputs are logged); the request's ``passthrough`` fields go with both."""
        if self.mode == "NONE":
            return
        now = time.time()
        head = {
            "inferenceId": inference_id,
            "modelName": model,
            "modelVersion": version,
            "signatureName": signature,
            "api": api,
            "requestTimestamp": int(started * 1000),
        }
        if passthrough:
            head["passthrough"] = passthrough
        topic, key = self.topic_for(model), inference_id.encode()
        if self.mode in ("ALL", "MODEL_INPUTS") and inputs is not None:
            request: dict[str, Any] = {**head, "type": "request", "inputs": _columns(inputs)}
            if violations and self.mode == "MODEL_INPUTS":
                request["violations"] = violations
            self._put(topic, key, request)
        if self.mode in ("ALL", "PREDICTIONS"):
            response: dict[str, Any] = {
                **head,
                "type": "response",
                "responseTimestamp": int(now * 1000),
                "latencyMs": round((now - started) * 1000, 3),
                "httpCode": http_code,
            }
            if outputs is not None:
                response["outputs"] = _columns(outputs)
            if error is not None:
                response["error"] = error
            if violations:
                response["violations"] = violations
            self._put(topic, key, response)

    def log_shadow(
        self,
        batch_id: str,
        model: str,
        version: int,
        signature: str,
        api: str,
        started: float,
        outputs: dict[str, np.ndarray] | None,
        http_code: int,
        error: str | None,
        answered: list[str],
        rows: list[int],
        passthrough: dict[str, list[Any]] | None,
        latency_s: float,
    ) -> None:
        """Queue one response record for a batch of calls the shadow version scored together:
        ``answered`` (their inference ids) and ``answeredRows`` (their rows, in order) say which rows of
        ``outputs`` and ``passthrough`` are whose. One record per batch, not per call: a record costs
        the producer about as much as a call costs the server (docs/serving.md, "Shadow")."""
        if self.mode not in ("ALL", "PREDICTIONS"):
            return
        record: dict[str, Any] = {
            "inferenceId": batch_id, "type": "response", "modelName": model, "modelVersion": version,
            "signatureName": signature, "api": api, "requestTimestamp": int(started * 1000),
            "responseTimestamp": int(time.time() * 1000), "latencyMs": round(latency_s * 1000, 3),
            "httpCode": http_code, "shadow": True, "answered": answered, "answeredRows": rows,
        }  # fmt: skip
        if outputs is not None:
            record["outputs"] = _columns(outputs)
        if error is not None:
            record["error"] = error
        if passthrough:
            record["passthrough"] = passthrough
        self._put(self.topic_for(model), batch_id.encode(), record)

    def _put(self, topic: str, key: bytes, record: dict[str, Any]) -> None:
        if len(self._queue) >= self._size:
            self._drop(1, "the log queue is full (the broker is slow or unreachable)")
            return
        # No wake-up: the send thread drains the queue every DRAIN_S (a wake-up per record handed
        # the GIL to it thousands of times a second, in the middle of calls).
        self._queue.append((topic, key, orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)))

    def _drop(self, count: int, why: str) -> None:
        self.metrics.log_dropped.inc(count)
        if not self._dropping:
            self._dropping = True
            log.warning("inference log: dropping records: %s", why)

    def _producer(self) -> Any:
        from fjord import kafka

        # acks=all and idempotent, retrying for 2 min; a failure returns the record to the queue, and is
        # never raised to a caller. Its own buffer holds 100k records (then produce() refuses at once).
        return kafka.c_producer(
            servers=self.bootstrap_servers, **{"acks": "all", "enable.idempotence": True,
            "linger.ms": 20, "message.timeout.ms": 120_000, "queue.buffering.max.messages": 100_000,
            "delivery.report.only.error": True, "on_delivery": self._undelivered,
            "error_cb": self._client_error, "logger": log, "log_level": 3},
        )  # fmt: skip

    def _client_error(self, error: Any) -> None:
        """librdkafka's error callback. A fatal error (the idempotent producer's state lost, as a
        broker restart may cause) makes the producer unusable: the send loop replaces it."""
        if error.fatal():
            self._fatal = str(error)

    def _ensure_topic(self, topic: str) -> None:
        if topic in self._topics:
            return
        from fjord import kafka

        try:
            kafka.ensure_topic(topic, partitions=1, retention_ms=7 * 86_400_000)
            self._topics.add(topic)
        except Exception as exc:  # the broker auto-creates it on the first send anyway
            log.debug("inference log: cannot create %s yet: %s", topic, exc)

    def _undelivered(self, error: Any, message: Any) -> None:
        """librdkafka's report on a record it could not deliver (only failures are reported: a
        callback per delivered record cost the server 5% of its calls; called from ``poll`` or
        ``flush``, in the send thread): back to the queue."""
        self._failures += 1
        self._failed((message.topic(), message.key(), message.value()), RuntimeError(str(error)))

    def _count_delivered(self, producer: Any) -> None:
        """``fjord_serving_inference_log_sent`` up to what left librdkafka's queue and did not fail."""
        delivered = self._produced - len(producer) - self._failures
        if delivered > self._counted:
            self.metrics.log_sent.inc(delivered - self._counted)
            self._counted = delivered
            self._dropping = False

    def _failed(self, record: tuple[str, bytes, bytes], exc: Exception) -> None:
        """``record`` was not delivered: back to the queue's front while it has room, else dropped."""
        if len(self._queue) >= self._size:
            self._drop(1, f"the broker refused or did not answer ({type(exc).__name__}), queue full")
            return
        self._queue.appendleft(record)
        self._retrying = True

    def _send_loop(self) -> None:
        producer = None
        while not (self._stop.is_set() and not self._queue):
            if producer is None:
                try:
                    producer = self._producer()
                except Exception as exc:
                    if len(self._queue) >= self._size:
                        self._drop(0, f"no broker ({type(exc).__name__})")
                    self._stop.wait(2.0)
                    if self._stop.is_set():
                        self._drop(len(self._queue), "stopping without a broker")
                        self._queue.clear()
                    continue
            try:
                if not self._send(producer):
                    break
            except Exception as exc:  # never let the thread die: the calls would queue for nothing
                log.warning("inference log: the producer failed (%s): starting another", exc)
                self._fatal = self._fatal or f"{type(exc).__name__}: {exc}"
            if self._fatal:
                self._replace(producer)
                producer = None
        if producer is not None:
            # stopping: what the broker takes in the 10 s it is given; the rest is counted as dropped
            while producer.flush(1.0) and time.monotonic() < self._give_up_at:
                pass
            self._count_delivered(producer)
            unsent = len(producer) + len(self._queue)
            if unsent:
                self._drop(unsent, "stopping while the broker is away")
                self._queue.clear()

    def _send(self, producer: Any) -> bool:
        """One round: delivery reports, then the queue handed to ``producer``. False: stop now."""
        producer.poll(0)  # delivery reports: a failed record comes back to the queue here
        self._count_delivered(producer)
        if not self._queue:
            self._stop.wait(DRAIN_S)
            return True
        if self._retrying:  # a record came back: give the broker a second before trying again
            self._retrying = False
            if self._stop.is_set() and time.monotonic() > self._give_up_at:
                return False
            self._stop.wait(1.0)
        while self._queue and not self._retrying and not self._fatal:
            record = self._queue.popleft()
            topic, key, value = record
            self._ensure_topic(topic)
            try:
                producer.produce(topic, value, key)
            except (BufferError, KafkaException) as exc:  # its buffer is full (the broker is away), or fatal
                self._failed(record, exc)
                break
            self._produced += 1
        return True

    def _replace(self, producer: Any) -> None:
        """Take back every record a failed producer still holds (to the queue's front), and drop it."""
        log.warning("inference log: replacing the producer after a fatal error: %s", self._fatal)
        try:
            producer.purge()  # its records come back as failed deliveries, on the next poll
            producer.poll(0)
        except Exception as exc:
            log.warning("inference log: the failed producer's records could not be taken back: %s", exc)
        self._count_delivered(producer)
        self._produced = self._failures = self._counted = 0  # the next producer counts afresh
        self._fatal = None

    def close(self) -> None:
        """Send what is queued (up to 10 s while the broker is away), then stop."""
        self._give_up_at = time.monotonic() + 10
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=20)
