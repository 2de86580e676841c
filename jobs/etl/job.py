"""The Spark ETL and validation job: one landing batch -> validated features in the feature store.

``run(EtlSpec(project="fraud", batch="2026-11-01"))``:

1. reads the batch (``Resources/landing/<batch>/``, Parquet or CSV) with an explicit schema; a batch
   without ``_SUCCESS``, or whose columns drifted, is refused;
2. cleans: normalises text, keeps timestamps in UTC, dedupes by tid; malformed records, rows that
   break a ``quarantine`` expectation of the suites, and labels of no (or of a quarantined)
   transaction go to ``Resources/quarantine/<batch>/`` with their reason, and are counted; more
   broken rows than an expectation's ``max_fraction`` reject the batch;
3. engineers per-card window features with Spark (count/sum/mean/std of amount over 1h, 4h, 24h and
   7d, time since the previous transaction, distance and speed from its location, category frequency),
   using the previous 7 days already in the feature store as context, and per-profile features;
4. validates every record with Great Expectations (suites in ``jobs/etl/expectations/``); results and
   HTML Data Docs go to the project's ``Logs/validation/<run_id>/``;
5. publishes only a batch that passes: one commit each to ``transactions_features``,
   ``profile_features``, ``fraud_labels`` and ``card_features`` (each card's latest state, for the
   model server's online lookups), in one publish: all four become visible together or none does.
   Recorded in the run's lineage with the landing files' checksums. Re-running a batch finds the same
   rows already published and adds no commit.

Batches may arrive in any order, and the features do not depend on it. A batch older than published
ones is context for them: after it is published, every later published batch whose 7-day windows
reach back to it, and every later one whose quarantine holds labels (they may be this batch's), is
recomputed, oldest first, each as its own run. One ETL of a project runs at a time on a host (a lock
in ``FJORD_HOME``; the DAG's ``etl`` task runs one at a time across its runs), so two batches never
read each other's history half-written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

import featurestore
from fjord.config import get_settings
from fjord.errors import FjordError
from fjord.fs import SharedFS
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.locks import locked
from fjord.progress import progress
from fjord.projects import Project, get_project
from fjord.spark import get_spark
from jobs.etl.validation import RowRule, ValidationReport, load_suite, row_rules, validate

LANDING = "Resources/landing"
QUARANTINE = "Resources/quarantine"
VALIDATION_LOGS = "Logs/validation"
_CODE = [Path(__file__).parent]

TRANSACTIONS = (
    "tid BIGINT, cc_num BIGINT, ts TIMESTAMP, amount DOUBLE, category STRING, city STRING, "
    "lat DOUBLE, lon DOUBLE, channel STRING"
)
LABELS = "tid BIGINT, is_fraud BIGINT, reported_at TIMESTAMP"
PROFILES = "cc_num BIGINT, birthdate DATE, city STRING, cc_provider STRING, cc_type STRING, cc_expiry DATE"
WINDOWS = {"1h": 3_600, "4h": 4 * 3_600, "24h": 86_400, "7d": 7 * 86_400}
CONTEXT = timedelta(days=7)
LABEL_LOOKBACK = timedelta(days=90)  # how late a label may arrive after its transaction
FILES = ("transactions", "labels", "profiles")
MALFORMED = "malformed record"
OF_QUARANTINED = "label of a quarantined transaction"


class EtlError(FjordError):
    """The batch cannot be processed as given (not landed, schema drift, unreadable)."""

    exit_code = 2


class BatchRejected(FjordError):
    """The batch failed critical expectations: nothing was published."""

    exit_code = 19


class EtlSpec(JobSpec):
    """What to run: which project's batch, and how."""

    project: str = Field(description="the project whose landing batch to process")
    batch: str = Field(description="the landing batch's date, YYYY-MM-DD")
    validate_data: bool = Field(default=True, description="validate every record with Great Expectations")
    expectations_dir: Path | None = Field(
        default=None, description="a directory of expectation suites instead of jobs/etl/expectations/"
    )

    @field_validator("batch")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"batch must be a date YYYY-MM-DD, not {value!r}") from None
        return value


@dataclass
class EtlResult:
    run_id: str
    batch: str
    rows_in: int
    quarantined: dict[str, int]  # per landing file
    reasons: dict[str, int] = field(default_factory=dict)  # "<file>: <reason>" -> rows
    quarantine_uri: str | None = None
    commits: dict[str, int] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)  # groups that already held the batch's rows
    validation: ValidationReport | None = None
    report_uri: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the profile
    recomputed: list[EtlResult] = field(default_factory=list)  # later batches, this one their context

    def summary(self) -> str:
        quarantined = sum(self.quarantined.values())
        published = ", ".join(
            f"{k} commit {v}" + (" (unchanged)" if k in self.unchanged else "")
            for k, v in self.commits.items()
        )
        warnings = len(self.validation.warnings) if self.validation else 0
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items(), key=lambda r: -r[1]))
        where = f" ({why}; in {self.quarantine_uri})" if quarantined else ""
        later = ""
        if self.recomputed:
            batches = ", ".join(r.batch for r in self.recomputed)
            later = f"; recomputed the later batch(es) {batches} with this one as context"
        return (
            f"batch {self.batch}: {self.rows_in:,} rows read, {quarantined:,} quarantined{where}, "
            f"{warnings} warning(s); published {published}; report {self.report_uri}{later}"
        )


@contextmanager
def _step(result_seconds: dict[str, float], batch: str, name: str) -> Iterator[None]:
    """Time one step: Spark runs lazily, so a step is timed by the action that ends it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        result_seconds[name] = round(time.perf_counter() - started, 3)
    progress(f"etl {batch}: {name} ({result_seconds[name]:.1f} s)")  # only a step that ended well


# -- reading -------------------------------------------------------------------------------------------


def _landed_file(fs: SharedFS, batch_dir: str, name: str) -> str:
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


def _parquet_schema(fs: SharedFS, rel: str) -> pa.Schema:
    try:
        with fs.open(rel) as handle:
            return pq.read_schema(handle)
    except (pa.ArrowInvalid, OSError) as exc:  # empty, truncated, or not Parquet at all
        raise EtlError(
            f"{fs.uri(rel)}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})",
            hint="the upstream's write did not finish or wrote something else; re-land the batch",
        ) from None


def _columns_of(fs: SharedFS, rel: str) -> list[str]:
    if rel.endswith(".parquet"):
        return _parquet_schema(fs, rel).names
    with fs.open(rel, "rb") as handle:
        header = handle.readline()
    try:
        return next(csv.reader([header.decode()]))  # quoted names too
    except (UnicodeDecodeError, StopIteration):
        raise EtlError(
            f"{fs.uri(rel)}: not a CSV file with a UTF-8 header line",
            hint="the upstream wrote something else; re-land the batch",
        ) from None


def _check_columns(fs: SharedFS, rel: str, schema: str) -> None:
    expected = [c.split()[0] for c in schema.split(", ")]
    found = _columns_of(fs, rel)
    if rel.endswith(".parquet"):
        types = {f.name: f.type for f in _parquet_schema(fs, rel)}
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


def _read(spark: SparkSession, fs: SharedFS, rel: str, schema: str) -> DataFrame:
    """``rel`` with ``schema``; CSV records that do not parse keep their raw text in ``_corrupt``."""
    _check_columns(fs, rel, schema)
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


def _checksum(fs: SharedFS, rel: str) -> str:
    digest = hashlib.sha256()
    with fs.open(rel) as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:32]}"


# -- cleaning ------------------------------------------------------------------------------------------


def _split_bad(frame: DataFrame, rules: list[RowRule]) -> tuple[DataFrame, DataFrame]:
    """(good rows, quarantined rows with a reason): malformed records and rows breaking ``rules``."""
    reason = F.when(F.col("_corrupt").isNotNull(), F.lit(MALFORMED))
    for rule in rules:
        reason = reason.when(rule.broken, F.lit(rule.reason))
    tagged = frame.withColumn("_reason", reason)
    good = tagged.where(F.col("_reason").isNull()).drop("_reason", "_corrupt")
    return good, tagged.where(F.col("_reason").isNotNull())


def _normalise(transactions: DataFrame) -> DataFrame:
    return (
        transactions.withColumn("category", F.lower(F.trim("category")))
        .withColumn("channel", F.lower(F.trim("channel")))
        .withColumn("city", F.trim("city"))
    )


def _dedupe(transactions: DataFrame) -> DataFrame:
    first = Window.partitionBy("tid").orderBy("ts")
    return transactions.withColumn("_n", F.row_number().over(first)).where("_n = 1").drop("_n")


def _check_fractions(result: EtlResult, rows: dict[str, int], rules: list[RowRule]) -> None:
    """Reject the batch when a rule quarantined more than its ``max_fraction`` of a file's rows."""
    batch, counts = result.batch, result.reasons
    for rule in rules:
        broken = counts.get(f"{rule.suite}: {rule.reason}", 0)
        if broken and broken > rule.max_fraction * rows[rule.suite]:
            raise BatchRejected(
                f"batch {batch} rejected, nothing published: {broken:,} of {rows[rule.suite]:,} "
                f"{rule.suite} rows ({broken / rows[rule.suite]:.1%}) break {rule.reason}, more than the "
                f"{rule.max_fraction:.0%} that rule may quarantine; the rows are in {result.quarantine_uri}"
            )


# -- features ------------------------------------------------------------------------------------------


def _haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    dlat, dlon = F.radians(lat2 - lat1), F.radians(lon2 - lon1)
    a = F.sin(dlat / 2) ** 2 + F.cos(F.radians(lat1)) * F.cos(F.radians(lat2)) * F.sin(dlon / 2) ** 2
    return F.lit(2 * 6371.0) * F.asin(F.sqrt(a))


def transaction_features(batch: DataFrame, history: DataFrame | None) -> DataFrame:
    """Per-card window features of ``batch``'s rows, with ``history`` (earlier rows) as context."""
    base = ["tid", "cc_num", "ts", "amount", "category", "lat", "lon"]
    rows = batch.select(*base, "city", "channel", F.lit(True).alias("_in_batch"))
    if history is not None:
        rows = rows.unionByName(history.select(*base, "city", "channel", F.lit(False).alias("_in_batch")))
    seconds = F.col("ts").cast("long")
    for name, span in WINDOWS.items():
        window = Window.partitionBy("cc_num").orderBy(seconds).rangeBetween(-span, 0)
        rows = (
            rows.withColumn(f"tx_count_{name}", F.count("amount").over(window))
            .withColumn(f"amount_sum_{name}", F.sum("amount").over(window))
            .withColumn(f"amount_mean_{name}", F.avg("amount").over(window))
            .withColumn(f"amount_std_{name}", F.coalesce(F.stddev_samp("amount").over(window), F.lit(0.0)))
        )
    category_window = (
        Window.partitionBy("cc_num", "category").orderBy(seconds).rangeBetween(-WINDOWS["7d"], 0)
    )
    previous = Window.partitionBy("cc_num").orderBy("ts", "tid")
    rows = (
        rows.withColumn("category_freq_7d", F.count("amount").over(category_window) / F.col("tx_count_7d"))
        .withColumn("_prev_ts", F.lag("ts").over(previous))
        .withColumn("secs_since_prev", seconds - F.col("_prev_ts").cast("long"))
        .withColumn(
            "dist_prev_km",
            _haversine_km(
                F.lag("lat").over(previous), F.lag("lon").over(previous), F.col("lat"), F.col("lon")
            ),
        )
        .withColumn(
            "speed_prev_kmh", F.col("dist_prev_km") / (F.greatest(F.col("secs_since_prev"), F.lit(60)) / 3600)
        )
        .withColumn("hour", F.hour("ts"))
        .withColumn("is_night", (F.hour("ts") < 5).cast("int"))
    )
    return rows.where("_in_batch").drop("_in_batch", "_prev_ts")


def card_features(features: DataFrame, history: DataFrame | None) -> DataFrame:
    """Each card's state as of its last transaction in the batch: what the model server needs to
    compute a new transaction's window features from the card number alone (``card_features``, the
    per-card online group). ``recent_7d`` is what exact windows need: a JSON list of the card's
    transactions, ``{"s": epoch second, "a": amount, "c": category, "la": lat, "lo": lon}``, whose
    second is at most 7 days
    before the last one's, oldest first (jobs/serve/transformers.py counts a new transaction's
    windows over it, as :func:`transaction_features` does). The counts and sums beside it (those of
    the windows ending at the last transaction) and ``category_counts_7d`` serve transformers written
    before it."""
    latest = Window.partitionBy("cc_num").orderBy(F.col("ts").desc(), F.col("tid").desc())
    last = (
        features.withColumn("_n", F.row_number().over(latest))
        .where("_n = 1")
        .select(
            "cc_num",
            "ts",
            F.col("ts").cast("double").alias("last_ts"),
            F.col("lat").alias("last_lat"),
            F.col("lon").alias("last_lon"),
            "tx_count_1h",
            "tx_count_24h",
            "amount_sum_24h",
            "tx_count_7d",
            "amount_sum_7d",
        )
    )
    kept = ["cc_num", "tid", "ts", "amount", "category", "lat", "lon"]
    rows = features.select(*kept)
    if history is not None:
        rows = rows.unionByName(history.select(*kept))
    edge = last.select("cc_num", F.col("ts").alias("_last"))
    seconds = F.col("ts").cast("long")
    recent = rows.join(edge, "cc_num").where(
        (F.col("ts") <= F.col("_last")) & (seconds >= F.col("_last").cast("long") - WINDOWS["7d"])
    )
    counts = (
        recent.where(F.col("ts") > F.col("_last") - F.expr(f"INTERVAL {WINDOWS['7d']} SECONDS"))
        .groupBy("cc_num", "category")
        .count()
        .groupBy("cc_num")
        .agg(
            F.to_json(F.map_from_entries(F.array_sort(F.collect_list(F.struct("category", "count"))))).alias(
                "category_counts_7d"
            )
        )
    )
    ordered = F.array_sort(
        F.collect_list(F.struct(seconds.alias("s"), F.col("tid"), "amount", "category", "lat", "lon"))
    )
    history_7d = recent.groupBy("cc_num").agg(
        F.to_json(
            F.transform(
                ordered,
                lambda t: F.struct(
                    t["s"].alias("s"),
                    t["amount"].alias("a"),
                    t["category"].alias("c"),
                    t["lat"].alias("la"),
                    t["lon"].alias("lo"),
                ),
            )
        ).alias("recent_7d")
    )
    return last.join(counts, "cc_num", "left").join(history_7d, "cc_num", "left")


def profile_features(profiles: DataFrame, batch_start: datetime) -> DataFrame:
    day = F.lit(batch_start.date())
    return profiles.select(
        "cc_num",
        F.lit(batch_start).cast("timestamp").alias("as_of"),
        (F.months_between(day, "birthdate") / 12).alias("age_years"),
        F.datediff("cc_expiry", day).alias("days_to_expiry"),
        "cc_provider",
        "cc_type",
        "city",
    )


# -- the job -------------------------------------------------------------------------------------------


def _history(
    fs: featurestore.FeatureStore, spark: SparkSession, start: datetime, span: timedelta = CONTEXT
) -> DataFrame | None:
    """The published transactions of the ``span`` before ``start`` (None before the first batch)."""
    groups = fs.get_feature_groups("transactions_features")
    if not groups or not groups[0].exists():
        return None
    frame = groups[0].read(dataframe_type="spark")
    return frame.where((F.col("ts") >= F.lit(start - span)) & (F.col("ts") < F.lit(start)))


def _published_batches_after(fs: featurestore.FeatureStore, start: datetime) -> list[str]:
    """The days after ``start``'s with published transactions: the later batches (a batch holds its day)."""
    groups = fs.get_feature_groups("transactions_features")
    if not groups or not groups[0].exists():
        return []
    frame = groups[0].read(dataframe_type="spark").where(F.col("ts") >= F.lit(start + timedelta(days=1)))
    days = frame.select(F.to_date("ts").alias("day")).distinct().collect()
    return sorted(row["day"].isoformat() for row in days)


def _needs_recompute(project: Project, start: datetime, batch: str) -> bool:
    """Whether a later ``batch`` may read ``start``'s rows: in its windows, or as a label's transaction."""
    day = datetime.strptime(batch, "%Y-%m-%d").replace(tzinfo=UTC)
    if day - start <= CONTEXT:
        return True
    return day - start <= LABEL_LOOKBACK and project.fs.exists(f"{QUARANTINE}/{batch}/labels")


def _publish_dir(project: Project, rel: str, local: Path, extra: dict[str, str]) -> str:
    with project.fs.publish(rel, overwrite=True) as out:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            out.upload(str(path), path.relative_to(local).as_posix())
        for name, text in extra.items():
            out.write_text(name, text)
    return project.fs.uri(rel)


def run(spec: EtlSpec) -> EtlResult:
    """Run the job for one batch, then recompute the later batches that read it (see the module's doc).

    :class:`BatchRejected` if it fails critical expectations.
    """
    project = get_project(spec.project)
    with locked(get_settings().home / "locks" / f"etl-{spec.project}.lock"):
        result = _run_batch(spec, project)
        start = datetime.strptime(spec.batch, "%Y-%m-%d").replace(tzinfo=UTC)
        later = _published_batches_after(featurestore.connect(spec.project), start)
        for batch in (b for b in later if _needs_recompute(project, start, b)):
            try:
                # its own run, a child of this one in the lineage
                later_spec = spec.model_copy(
                    update={"batch": batch, "run_id": None, "parent_run_id": result.run_id}
                )
                result.recomputed.append(_run_batch(later_spec, project))
            except FjordError as exc:
                raise EtlError(
                    f"batch {spec.batch} is published, but recomputing the later batch {batch} with it "
                    f"as context failed: {exc}",
                    hint=f"fix the cause, then run the ETL of {batch} again (it reads {spec.batch})",
                ) from exc
    return result


def _run_batch(spec: EtlSpec, project: Project) -> EtlResult:
    """One batch, start to publish."""
    fs_ = project.fs
    batch_dir = f"{LANDING}/{spec.batch}"
    if not fs_.exists(batch_dir):
        raise EtlError(f"no landing batch {fs_.uri(batch_dir)}")
    if not fs_.is_published(batch_dir):
        raise EtlError(
            f"batch {spec.batch} is not complete: {fs_.uri(batch_dir)} has no _SUCCESS",
            hint="the upstream writes _SUCCESS when the batch is whole; wait for it",
        )
    files = {name: _landed_file(fs_, batch_dir, name) for name in FILES}
    start = datetime.strptime(spec.batch, "%Y-%m-%d").replace(tzinfo=UTC)
    spark = get_spark(project, app_name=f"etl-{spec.batch}")
    store = featurestore.connect(spec.project)

    with track_run(
        project,
        "etl",
        params=spec.model_dump(mode="json"),
        code=_CODE,
        **spec.run_tree(),
    ) as run_record:
        for rel in files.values():
            run_record.add_input(fs_.uri(rel), _checksum(fs_, rel), kind="raw")
        raw = {
            "transactions": _read(spark, fs_, files["transactions"], TRANSACTIONS),
            "labels": _read(spark, fs_, files["labels"], LABELS),
            "profiles": _read(spark, fs_, files["profiles"], PROFILES),
        }
        seconds: dict[str, float] = {}
        with _step(seconds, spec.batch, "read"):
            rows_in = raw["transactions"].count()
        directory = spec.expectations_dir or Path(__file__).parent / "expectations"
        # Naive UTC datetimes: what Spark (session time zone UTC) hands GX for a timestamp column.
        day_start = start.replace(tzinfo=None)
        substitutions = {"batch_start": day_start, "batch_end": day_start + timedelta(days=1)}
        suites = {name: load_suite(name, substitutions, directory) for name in FILES}
        rules = {name: row_rules(name, suite) for name, suite in suites.items()}
        good, bad = {}, {}
        normalised = {**raw, "transactions": _normalise(raw["transactions"])}
        for name, frame in normalised.items():
            good[name], bad[name] = _split_bad(frame, rules[name])
        transactions = _dedupe(good["transactions"]).cache()
        # Labels arrive after their transactions, often in a later batch: each is joined to its
        # transaction in this batch or in the store's last LABEL_LOOKBACK; one that matches none is
        # quarantined, not dropped, and so is the label of a quarantined transaction.
        known = transactions.select("tid", "cc_num", "ts")
        earlier = _history(store, spark, start, LABEL_LOOKBACK)
        if earlier is not None:
            known = known.unionByName(earlier.select("tid", "cc_num", "ts"))
        matched = good["labels"].join(
            known.withColumnRenamed("tid", "_tid"), F.col("tid") == F.col("_tid"), "left"
        )
        good["labels"] = matched.where(F.col("_tid").isNotNull()).drop("_tid").cache()
        set_aside = (
            bad["transactions"].select(F.col("tid").alias("_qtid")).where("_qtid IS NOT NULL").distinct()
        )
        no_match = f"label of no transaction in this batch or the {LABEL_LOOKBACK.days} days before"
        orphans = (
            matched.where(F.col("_tid").isNull())
            .join(set_aside, F.col("tid") == F.col("_qtid"), "left")
            .select(
                *[F.col(c) for c in good["labels"].columns if c not in ("cc_num", "ts")],
                F.when(F.col("_qtid").isNotNull(), F.lit(OF_QUARANTINED))
                .otherwise(F.lit(no_match))
                .alias("_reason"),
            )
        )
        bad["labels"] = bad["labels"].unionByName(orphans, allowMissingColumns=True)
        quarantined, reasons = {}, {}
        quarantine_dir = f"{QUARANTINE}/{spec.batch}"
        with _step(seconds, spec.batch, "quarantine"), fs_.publish(quarantine_dir, overwrite=True) as out:
            for name, frame in bad.items():
                frame = frame.cache()
                counts = {row["_reason"]: row["count"] for row in frame.groupBy("_reason").count().collect()}
                reasons.update({f"{name}: {reason}": n for reason, n in counts.items()})
                quarantined[name] = sum(counts.values())
                if quarantined[name]:
                    frame.write.json(out.spark_uri(name))
        result = EtlResult(
            run_record.run_id,
            spec.batch,
            rows_in,
            quarantined,
            reasons,
            fs_.uri(f"{QUARANTINE}/{spec.batch}"),
            seconds=seconds,
        )
        # Only a file with quarantined rows needs its row count: no extra pass over clean files.
        rows = {
            name: rows_in if name == "transactions" else raw[name].count()
            for name in FILES
            if quarantined[name]
        }
        _check_fractions(result, rows, [r for name in FILES for r in rules[name]])

        if spec.validate_data:
            validation = _step(seconds, spec.batch, "validation")
            with validation, tempfile.TemporaryDirectory(prefix="gx-docs-") as docs:
                report = validate(
                    {"transactions": transactions, "labels": good["labels"], "profiles": good["profiles"]},
                    suites,
                    Path(docs),
                )
                summary = {
                    "success": report.success,
                    "evaluated": report.evaluated,
                    "failures": [f.__dict__ for f in report.failures],
                    "on_failure": {
                        name: {
                            f"{e['type']}({e['kwargs'].get('column', '')})": e["on_failure"] for e in suite
                        }
                        for name, suite in suites.items()
                    },
                    "quarantined": reasons,
                }
                result.report_uri = _publish_dir(
                    project,
                    f"{VALIDATION_LOGS}/{run_record.run_id}",
                    Path(docs),
                    {"results.json": json.dumps(summary, indent=2, default=str)},
                )
            result.validation = report
            run_record.params["validation"] = {"success": report.success, "failures": len(report.failures)}
            if not report.success:
                failed = "; ".join(f.describe() for f in report.critical)
                raise BatchRejected(
                    f"batch {spec.batch} rejected, nothing published: {len(report.critical)} "
                    f"critical expectation(s) failed ({failed}); report {result.report_uri}"
                )

        context = _history(store, spark, start)
        features = transaction_features(transactions, context).cache()
        labels = good["labels"]
        groups = {
            "transactions_features": (
                features,
                ["tid"],
                "ts",
                "Per-transaction card features over 1h-7d windows",
            ),
            "fraud_labels": (labels, ["tid"], "ts", "Fraud labels (is_fraud) at transaction time"),
            "profile_features": (
                profile_features(good["profiles"], start),
                ["cc_num"],
                "as_of",
                "Card holder age and card expiry",
            ),
            "card_features": (
                card_features(features, context),
                ["cc_num"],
                "ts",
                "Each card's latest state: window counts and sums, place, categories (serving-time features)",
            ),
        }
        # One publish: the three groups' commits become visible together, or not at all.
        committing = _step(seconds, spec.batch, "commit and online write")
        with committing, store.publish(run=run_record) as publish:
            for name, (frame, key, event_time, description) in groups.items():
                group = store.get_or_create_feature_group(
                    name,
                    1,
                    primary_key=key,
                    event_time=event_time,
                    description=description,
                    online_enabled=name != "fraud_labels",
                )
                with _step(seconds, spec.batch, f"insert {name}"):
                    result.commits[name] = publish.insert(group, frame)
        result.unchanged = [ref.split(".", 1)[1].rsplit("_", 1)[0] for ref in publish.unchanged]
        seconds["commit and online write"] -= sum(v for k, v in seconds.items() if k.startswith("insert "))
        for frame in (transactions, features, *raw.values()):
            frame.unpersist()
    return result
