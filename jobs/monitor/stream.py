"""The Spark side of the monitor: inference log records -> checked records -> window counters.

Each micro-batch of Kafka records (Spark's own Kafka source) is parsed against the inference log's
schema (:mod:`jobs.serve.inference_log`). A record that cannot be counted gets a ``reason`` and goes
to the dead letters instead; the others become the counter rows of :mod:`jobs.monitor.windows`, grouped
by (model, version, window, metric, key). Everything here is a Spark plan: it scales with the
cluster, and only the counters (a few hundred rows per window) reach the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from jobs.monitor.windows import LATENCY_BUCKETS_PER_DOUBLING, PREDICTION_BINS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CORRUPT = "_corrupt"
RECORD = StructType(
    [
        StructField("inferenceId", StringType()),
        StructField("type", StringType()),
        StructField("modelName", StringType()),
        StructField("modelVersion", LongType()),
        StructField("requestTimestamp", LongType()),
        StructField("latencyMs", DoubleType()),
        StructField("httpCode", IntegerType()),
        StructField("error", StringType()),
        # Columnar: name -> one value per row. Numbers are read as their JSON text, cast below.
        StructField("inputs", MapType(StringType(), ArrayType(StringType()))),
        StructField("outputs", MapType(StringType(), ArrayType(StringType()))),
        StructField(CORRUPT, StringType()),
    ]
)
EDGES = StructType(
    [
        StructField("model", StringType()),
        StructField("version", LongType()),
        StructField("feature", StringType()),
        StructField("categorical", StringType()),
        StructField("edges", ArrayType(DoubleType())),
    ]
)
COUNTER_COLUMNS = ["model", "version", "window", "metric", "key", "n", "s", "lo", "hi"]


def _reason() -> Any:
    """Why a parsed record cannot be counted (null when it can), first failing check wins."""
    r = F.col("r")
    sizes = F.array_distinct(F.transform(F.map_values(r.inputs), lambda a: F.size(a)))
    return (
        F.when(F.col("value").isNull(), F.lit("empty record"))
        .when(r.isNull() | r[CORRUPT].isNotNull(), F.lit("not a JSON inference log record"))
        .when(~r.type.isin("request", "response"), F.lit("type is neither request nor response"))
        .when(r.modelName.isNull(), F.lit("no modelName"))
        .when(r.modelVersion.isNull(), F.lit("no modelVersion (an integer)"))
        .when(r.requestTimestamp.isNull(), F.lit("no requestTimestamp (ms since the epoch)"))
        .when((r.type == "request") & (F.size(r.inputs) < 1), F.lit("a request without inputs"))
        .when((r.type == "request") & (F.size(sizes) > 1), F.lit("inputs of unequal lengths"))
        .when((r.type == "response") & r.httpCode.isNull(), F.lit("a response without httpCode"))
    )


def parse(batch: DataFrame) -> DataFrame:
    """Kafka rows -> the record's fields, the Kafka coordinates, and ``reason`` (null if good)."""
    parsed = batch.select(
        "topic", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"),
        F.col("value").cast("string").alias("value"),
    ).withColumn("r", F.from_json("value", RECORD, {"columnNameOfCorruptRecord": CORRUPT}))  # fmt: skip
    return parsed.withColumn("reason", _reason())


def dead_letters(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull()).select(
        "topic", "partition", "offset", "kafka_timestamp", "value", "reason"
    )


def edges_frame(spark: SparkSession, references: dict[tuple[str, int], dict[str, Any]]) -> DataFrame:
    """One row per (model, version, feature) of the references: the grid a value is counted on."""
    rows = [
        (model, version, name, "1" if ref.get("kind") == "categorical" else None, ref.get("edges") or None)
        for (model, version), reference in references.items()
        for name, ref in reference["features"].items()
    ]
    return spark.createDataFrame(rows, EDGES)


def counters(
    parsed: DataFrame,
    edges: DataFrame,
    *,
    window_ms: int,
    watermark_ms: int,
    output: str | None,
    positive_threshold: float,
) -> DataFrame:
    """The micro-batch's counters, one row per (model, version, window, metric, key)."""
    r = F.col("r")
    good = parsed.where(F.col("reason").isNull()).select(
        r.modelName.alias("model"), r.modelVersion.alias("version"), r.type.alias("type"),
        r.requestTimestamp.alias("ts"), r.latencyMs.alias("latency"), r.httpCode.alias("http"),
        r.inputs.alias("inputs"), r.outputs.alias("outputs"),
        (r.requestTimestamp - F.pmod(r.requestTimestamp, F.lit(window_ms))).alias("window"),
    )  # fmt: skip
    late = (F.col("window") + window_ms) <= F.lit(watermark_ms)
    on_time = good.where(~late)
    head = [F.col("model"), F.col("version"), F.col("window")]

    def rows(
        frame: DataFrame, metric: Any, key: Any, n: Any = None, s: Any = None, v: Any = None
    ) -> DataFrame:
        value = F.lit(None).cast("double") if v is None else v.cast("double")
        return frame.select(
            *head, metric.alias("metric"), key.cast("string").alias("key"),
            (F.lit(1) if n is None else n).cast("long").alias("n"),
            (F.lit(0.0) if s is None else s).cast("double").alias("s"),
            value.alias("lo"), value.alias("hi"),
        )  # fmt: skip

    responses = on_time.where(F.col("type") == "response")
    requests = on_time.where(F.col("type") == "request")
    bucket = F.floor(LATENCY_BUCKETS_PER_DOUBLING * F.log2(F.greatest(F.col("latency"), F.lit(0.001)) * 1000))
    first_output = F.element_at(F.map_values("outputs"), 1)
    scores = (
        responses.select(
            *head,
            F.explode(F.col("outputs")[output] if output else first_output).alias("raw"),
        )
        .select(*head, F.expr("try_cast(raw AS DOUBLE)").alias("p"))
        .where(F.col("p").isNotNull())
    )
    values = (
        requests.select(*head, F.explode(F.map_entries("inputs")).alias("e"))
        .select(*head, F.col("e.key").alias("feature"), F.explode("e.value").alias("raw"))
        .join(F.broadcast(edges), ["model", "version", "feature"])
        .withColumn("x", F.expr("try_cast(raw AS DOUBLE)"))
    )
    missing = F.col("raw").isNull() | (F.col("categorical").isNull() & (F.col("x").isNull() | F.isnan("x")))
    grid_bin = (
        F.when(F.col("x") < F.col("edges")[0], F.lit(-1))
        .otherwise(F.size(F.filter("edges", lambda e: e < F.col("x"))))
        .cast("string")
    )
    feature_key = (
        F.when(missing, F.lit("null"))
        .when(F.col("categorical").isNotNull(), F.col("raw"))
        .otherwise(grid_bin)
    )
    numeric_value = F.when(missing | F.col("categorical").isNotNull(), F.lit(0.0)).otherwise(F.col("x"))
    parts = [
        rows(on_time, F.lit("events"), F.lit(""), v=F.col("ts")),
        rows(good.where(late), F.lit("late"), F.lit("")),
        rows(responses, F.lit("requests"), F.lit("")),
        rows(responses.where(F.col("http") >= 400), F.lit("errors"), F.lit("")),
        rows(
            responses.where(F.col("latency").isNotNull()),
            F.lit("latency"),
            bucket,
            s=F.col("latency"),
            v=F.col("latency"),
        ),
        rows(
            scores,
            F.lit("prediction"),
            F.least(F.greatest(F.floor(F.col("p") * PREDICTION_BINS), F.lit(0)), F.lit(PREDICTION_BINS - 1)),
            s=F.col("p"),
        ),
        rows(scores.where(F.col("p") >= positive_threshold), F.lit("positive"), F.lit("")),
        rows(requests, F.lit("inputs"), F.lit(""), s=F.size(F.element_at(F.map_values("inputs"), 1))),
        rows(values, F.concat(F.lit("f:"), F.col("feature")), feature_key, s=numeric_value),
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.groupBy("model", "version", "window", "metric", "key").agg(
        F.sum("n").alias("n"), F.sum("s").alias("s"), F.min("lo").alias("lo"), F.max("hi").alias("hi")
    )
