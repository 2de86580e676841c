"""What every ingest job does, whatever its data: find a landing batch's files and check their
columns against a schema before Spark reads them, set aside the rows that break a rule (with their
reason, in ``Resources/quarantine/<batch>/``) and refuse a batch that breaks one too often, and publish
a validation report. The fraud demo's schemas and features are in jobs/etl/fraud.py; the job that
runs them, in jobs/etl/job.py."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fjord.errors import FjordError
from fjord.fs import SharedFS
from fjord.progress import progress
from fjord.projects import Project
from jobs.etl.validation import RowRule

LANDING = "Resources/landing"
QUARANTINE = "Resources/quarantine"
VALIDATION_LOGS = "Logs/validation"
MALFORMED = "malformed record"


class EtlError(FjordError):
    """The batch cannot be processed as given (not landed, schema drift, unreadable)."""

    exit_code = 2


class BatchRejected(FjordError):
    """The batch failed critical expectations: nothing was published."""

    exit_code = 19


@contextmanager
def step(result_seconds: dict[str, float], batch: str, name: str) -> Iterator[None]:
    """Time one step: Spark runs lazily, so a step is timed by the action that ends it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        result_seconds[name] = round(time.perf_counter() - started, 3)
    progress(f"etl {batch}: {name} ({result_seconds[name]:.1f} s)")  # only a step that ended well


# -- reading -------------------------------------------------------------------------------------------


def landed_file(fs: SharedFS, batch_dir: str, name: str) -> str:
    for ext in ("parquet", "csv"):
        if fs.exists(f"{batch_dir}/{name}.{ext}"):
            return f"{batch_dir}/{name}.{ext}"
    raise EtlError(f"{fs.uri(batch_dir)} has no {name}.parquet or {name}.csv")


# Which Arrow types a declared Spark column accepts from a Parquet file (a cast that cannot lose
# meaning); text in a numeric column is refused here, not deep inside Spark.
_ACCEPTS = {
    "BIGINT": pa.types.is_integer,
    "DOUBLE": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t),
    "STRING": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "TIMESTAMP": pa.types.is_timestamp,
    "DATE": lambda t: pa.types.is_date(t) or pa.types.is_timestamp(t),
}


def parquet_schema(fs: SharedFS, rel: str) -> pa.Schema:
    try:
        with fs.open(rel) as handle:
            return pq.read_schema(handle)
    except (pa.ArrowInvalid, OSError) as exc:  # empty, truncated, or not Parquet at all
        raise EtlError(
            f"{fs.uri(rel)}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})",
            hint="the upstream's write did not finish or wrote something else; re-land the batch",
        ) from None


def columns_of(fs: SharedFS, rel: str) -> list[str]:
    if rel.endswith(".parquet"):
        return parquet_schema(fs, rel).names
    with fs.open(rel, "rb") as handle:
        header = handle.readline()
    try:
        return next(csv.reader([header.decode()]))  # quoted names too
    except (UnicodeDecodeError, StopIteration):
        raise EtlError(
            f"{fs.uri(rel)}: not a CSV file with a UTF-8 header line",
            hint="the upstream wrote something else; re-land the batch",
        ) from None


def check_columns(fs: SharedFS, rel: str, schema: str) -> None:
    expected = [c.split()[0] for c in schema.split(", ")]
    found = columns_of(fs, rel)
    if rel.endswith(".parquet"):
        types = {f.name: f.type for f in parquet_schema(fs, rel)}
        for column, kind in (c.split() for c in schema.split(", ")):
            if column in types and not _ACCEPTS[kind](types[column]):
                raise EtlError(
                    f"{fs.uri(rel)}: column {column!r} holds {types[column]}, not {kind.lower()}",
                    hint="the upstream changed a column's type; fix it upstream or map the column",
                )
    missing = [c for c in expected if c not in found]
    unexpected = [c for c in found if c not in expected]
    if missing or unexpected:
        raise EtlError(
            f"{fs.uri(rel)}: schema drift: missing {missing}, unexpected {unexpected}",
            hint="the upstream changed its columns; fix it upstream or map the columns",
        )


def read(spark: SparkSession, fs: SharedFS, rel: str, schema: str) -> DataFrame:
    """``rel`` with ``schema``; CSV records that do not parse keep their raw text in ``_corrupt``."""
    check_columns(fs, rel, schema)
    if rel.endswith(".csv"):
        return (
            spark.read.schema(f"{schema}, _corrupt STRING")
            .option("header", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", "_corrupt")
            .option("timestampFormat", "yyyy-MM-dd HH:mm:ss[.SSSSSS]XXX")
            .csv(fs.spark_uri(rel))
            .cache()
        )
    frame = spark.read.parquet(fs.spark_uri(rel))
    columns = [F.col(c.split()[0]).cast(c.split()[1]).alias(c.split()[0]) for c in schema.split(", ")]
    return frame.select(*columns, F.lit(None).cast("string").alias("_corrupt"))


# -- quarantine ----------------------------------------------------------------------------------------


def split_bad(frame: DataFrame, rules: list[RowRule]) -> tuple[DataFrame, DataFrame]:
    """(good rows, quarantined rows with a reason): malformed records and rows breaking ``rules``."""
    reason = F.when(F.col("_corrupt").isNotNull(), F.lit(MALFORMED))
    for rule in rules:
        reason = reason.when(rule.broken, F.lit(rule.reason))
    tagged = frame.withColumn("_reason", reason)
    good = tagged.where(F.col("_reason").isNull()).drop("_reason", "_corrupt")
    return good, tagged.where(F.col("_reason").isNotNull())


def check_fractions(
    batch: str, reasons: dict[str, int], rows: dict[str, int], rules: list[RowRule], where: str
) -> None:
    """Reject the batch when a rule quarantined more than its ``max_fraction`` of a file's rows
    (``reasons``: ``"<file>: <reason>"`` -> rows set aside; ``where``: the quarantine's URI)."""
    for rule in rules:
        broken = reasons.get(f"{rule.suite}: {rule.reason}", 0)
        if broken and broken > rule.max_fraction * rows[rule.suite]:
            raise BatchRejected(
                f"batch {batch} rejected, nothing published: {broken:,} of {rows[rule.suite]:,} "
                f"{rule.suite} rows ({broken / rows[rule.suite]:.1%}) break {rule.reason}, more than the "
                f"{rule.max_fraction:.0%} that rule may quarantine; the rows are in {where}"
            )


# -- reports -------------------------------------------------------------------------------------------


def publish_dir(project: Project, rel: str, local: Path, extra: dict[str, str]) -> str:
    with project.fs.publish(rel, overwrite=True) as out:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            out.upload(str(path), path.relative_to(local).as_posix())
        for name, text in extra.items():
            out.write_text(name, text)
    return project.fs.uri(rel)
