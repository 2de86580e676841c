"""The inference log's error paths at its one boundary, librdkafka's producer: a producer that fails
fatally (the idempotent producer's state lost, as a broker restart may cause) or raises is replaced,
and every record it held is sent by the next one. The delivery itself, on a real broker with a
restart under load, is tests/integration/test_inference_log.py."""

from __future__ import annotations

from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException

from jobs.serve.inference_log import InferenceLogger
from jobs.serve.metrics import Metrics
from tests.waiting import wait_for


class _Message:
    def __init__(self, topic: str, value: bytes, key: bytes) -> None:
        self._topic, self._value, self._key = topic, value, key

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key


class _Producer:
    """A stand-in for ``confluent_kafka.Producer``: it holds what it is given until ``poll``
    delivers it to ``delivered``; ``fail`` makes it go fatal after that many records."""

    def __init__(self, config: dict[str, Any], delivered: list[bytes], fail: int | None) -> None:
        self.config, self.delivered, self.fail = config, delivered, fail
        self.held: list[_Message] = []
        self.produced = 0

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        if self.fail is not None and self.produced >= self.fail:
            self.config["error_cb"](KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal", fatal=True))
        self.held.append(_Message(topic, value, key))
        self.produced += 1

    def poll(self, _timeout: float = 0) -> int:
        if self.fail is not None and self.produced >= self.fail:
            return 0  # a fatal producer delivers nothing more
        self.delivered += [m.value() for m in self.held]
        self.held = []
        return 0

    def purge(self) -> None:
        for message in self.held:  # as librdkafka reports purged records: failed deliveries
            self.config["on_delivery"](KafkaError(KafkaError._PURGE_QUEUE), message)
        self.held = []

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return len(self.held)

    def __len__(self) -> int:
        return len(self.held)


def test_a_fatal_producer_is_replaced_and_what_it_held_is_sent_by_the_next(monkeypatch) -> None:
    delivered: list[bytes] = []
    producers: list[_Producer] = []

    def make(**config: Any) -> _Producer:
        producers.append(_Producer(config, delivered, fail=5 if not producers else None))
        return producers[-1]

    monkeypatch.setattr("fjord.kafka.c_producer", lambda servers=None, **config: make(**config))
    monkeypatch.setattr(InferenceLogger, "_ensure_topic", lambda self, topic: None)
    logger = InferenceLogger("ALL", lambda model: "t", Metrics(), bootstrap_servers="localhost:9")
    x = {"x": np.array([1.0])}
    for i in range(20):
        logger.log(f"id-{i}", "m", 1, "serving_default", "rest", 0.0, x, x, 200)
    wait_for(lambda: len(delivered) >= 40, 30, "every record delivered")
    logger.close()
    assert len(producers) == 2  # the fatal one, and its replacement
    assert sorted(delivered) == sorted(set(delivered)) and len(delivered) == 40  # each record once
