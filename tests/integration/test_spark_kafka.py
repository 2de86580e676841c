"""Spark's own Kafka source (spark-sql-kafka-0-10, fetched by make) against the embedded Apache Kafka:
a batch read, and a streaming query whose offsets live in its checkpoint, so a restarted query reads
exactly the records that arrived after its last batch."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _produce(bootstrap: str, topic: str, values: range, login: dict) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **login)
    for i in values:
        producer.send(topic, key=str(i).encode(), value=f'{{"i": {i}}}'.encode())
    producer.flush()
    producer.close()


def test_batch_read_and_a_checkpointed_stream_resume_exactly(spark, broker, kafka_login, tmp_path) -> None:
    from fjord.kafka import spark_options

    topic = f"inference-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=broker, **kafka_login)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    _produce(broker, topic, range(100), kafka_login)

    # The address and the login, as the monitor passes them.
    source = {**spark_options(), "subscribe": topic, "startingOffsets": "earliest"}
    batch = spark.read.format("kafka").options(**source).load()
    assert batch.count() == 100
    assert {r.partition for r in batch.select("partition").distinct().collect()} == {0, 1}

    out, checkpoint = tmp_path / "out", tmp_path / "checkpoint"

    def run_once() -> None:
        stream = spark.readStream.format("kafka").options(**source).load()
        query = (
            stream.selectExpr("CAST(value AS STRING) AS value")
            .writeStream.format("parquet")
            .option("path", str(out))
            .option("checkpointLocation", str(checkpoint))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination(120)
        assert query.exception() is None

    run_once()
    assert spark.read.parquet(str(out)).count() == 100
    _produce(broker, topic, range(100, 150), kafka_login)
    run_once()  # a new query on the same checkpoint: only the 50 new records
    values = [r.value for r in spark.read.parquet(str(out)).collect()]
    assert len(values) == 150 and len(set(values)) == 150
