"""Spark join engine: the same point-in-time join for data that outgrows one machine.

No range join (which multiplies each label row by every older feature row of its key). Instead the
left rows and the right rows go into one relation, sorted per key by (event time, right before left),
and each left row takes the last right row seen so far: a shuffle and a sort, linear in the data. The
right row travels as one struct, so a null feature value is carried as null rather than skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from featurestore.engines.base import JoinEngine, JoinPlan, Source
from featurestore.schema import normalise
from fjord.fs import SharedFS, spark_uris
from fjord.spark import get_spark

_LEFT, _RIGHT = 1, 0


def _read(spark: SparkSession, source: Source, columns: list[str]) -> DataFrame:
    if not source.files:
        assert source.schema is not None
        empty = pa.Table.from_batches([], schema=source.schema.select(columns))
        return spark.createDataFrame(empty.to_pandas(), schema=None if empty.num_columns else "x int")
    return spark.read.option("mergeSchema", "true").parquet(*spark_uris(source.files)).select(*columns)


class SparkJoinEngine(JoinEngine):
    name = "spark"

    def dataframe(self, plan: JoinPlan) -> DataFrame:
        spark = get_spark()
        left = plan.left
        left_keys = [k for k, _ in left.keys]
        join_keys = [lk for source in plan.joins for lk, _ in source.keys]  # read even if not selected
        left_cols = list(dict.fromkeys([*left_keys, left.event_time, *left.columns, *join_keys]))
        frame = _read(spark, left, left_cols)
        if plan.start_time is not None:
            frame = frame.where(F.col(left.event_time) >= F.lit(plan.start_time))
        if plan.end_time is not None:
            frame = frame.where(F.col(left.event_time) < F.lit(plan.end_time))
        renames = {c: o for c, o in zip(left.columns, left.outputs(), strict=True)}
        head = list(dict.fromkeys([*left_keys, left.event_time]))
        carried = [k for k in dict.fromkeys(join_keys) if k not in head and k not in renames.values()]
        frame = frame.select(
            *[F.col(c) for c in head],
            *[F.col(c).alias(o) for c, o in renames.items() if o not in head],
            *[F.col(c) for c in carried],
        )
        for i, source in enumerate(plan.joins):
            frame = self._join_one(spark, frame, left.event_time, source, i)
        return frame.select(*plan.output_columns()).orderBy(left.event_time, *left_keys)

    def _join_one(
        self, spark: SparkSession, frame: DataFrame, event_time: str, source: Source, i: int
    ) -> DataFrame:
        keys = [f"__k{j}" for j in range(len(source.keys))]
        left_columns = frame.columns
        lhs = frame.select(
            *[F.col(lk).alias(k) for k, (lk, _) in zip(keys, source.keys, strict=True)],
            F.col(event_time).alias("__ts"),
            F.lit(_LEFT).alias("__side"),
            F.struct(*[F.col(c) for c in left_columns]).alias("__l"),
        )
        right_cols = list(dict.fromkeys([*(r for _, r in source.keys), *source.columns, source.event_time]))
        right = _read(spark, source, right_cols)
        rhs = right.select(
            *[F.col(rk).alias(k) for k, (_, rk) in zip(keys, source.keys, strict=True)],
            F.col(source.event_time).alias("__ts"),
            F.lit(_RIGHT).alias("__side"),
            F.struct(
                F.col(source.event_time).alias("__rts"),
                *[F.col(c).alias(o) for c, o in zip(source.columns, source.outputs(), strict=True)],
            ).alias("__r"),
        )
        both = lhs.withColumn("__r", F.lit(None).cast(rhs.schema["__r"].dataType)).unionByName(
            rhs.withColumn("__l", F.lit(None).cast(lhs.schema["__l"].dataType))
        )
        window = Window.partitionBy(*keys).orderBy("__ts", "__side").rowsBetween(Window.unboundedPreceding, 0)
        matched = both.withColumn("__m", F.last("__r", ignorenulls=True).over(window)).where(
            F.col("__side") == _LEFT
        )
        fresh = F.lit(True)
        if source.max_lookback is not None:
            micros = int(source.max_lookback.total_seconds() * 1_000_000)
            fresh = F.unix_micros(F.col("__l")[event_time]) - F.unix_micros(F.col("__m.__rts")) <= micros
        return matched.select(
            *[F.col("__l")[c].alias(c) for c in left_columns],
            *[F.when(fresh, F.col("__m")[o]).alias(o) for o in source.outputs()],
        )

    def to_arrow(self, plan: JoinPlan) -> pa.Table:
        return normalise(self.dataframe(plan).toArrow())

    def write_parquet(
        self,
        plan: JoinPlan,
        out: SharedFS,
        tap: Callable[[pa.Table], None] | None = None,
        while_writing: Callable[[], None] | None = None,
    ) -> int:
        self.dataframe(plan).write.parquet(out.spark_uri())
        if tap is None:
            rows = get_spark().read.parquet(out.spark_uri()).count()
        else:  # the rows as written: read back (the executors wrote them)
            written = normalise(out.read_parquet(""))
            tap(written)
            rows = written.num_rows
        if while_writing:
            while_writing()
        return int(rows)
