"""The fraud demo's data and features: the landing files' schemas, their cleaning, and the four
feature groups a batch publishes (``transactions_features``, ``fraud_labels``, ``profile_features``
and ``card_features``). Everything here is the demo's; the mechanics around it are
jobs/etl/landing.py's and jobs/etl/job.py's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

TRANSACTIONS = (
    "tid BIGINT, cc_num BIGINT, ts TIMESTAMP, amount DOUBLE, category STRING, city STRING, "
    "lat DOUBLE, lon DOUBLE, channel STRING"
)
LABELS = "tid BIGINT, is_fraud BIGINT, reported_at TIMESTAMP"
PROFILES = "cc_num BIGINT, birthdate DATE, city STRING, cc_provider STRING, cc_type STRING, cc_expiry DATE"
SCHEMAS = {"transactions": TRANSACTIONS, "labels": LABELS, "profiles": PROFILES}
FILES = tuple(SCHEMAS)
WINDOWS = {"1h": 3_600, "4h": 4 * 3_600, "24h": 86_400, "7d": 7 * 86_400}
CONTEXT = timedelta(days=7)  # the history a batch's windows read
LABEL_LOOKBACK = timedelta(days=90)  # how late a label may arrive after its transaction
OF_QUARANTINED = "label of a quarantined transaction"


# -- cleaning ------------------------------------------------------------------------------------------


def normalise(transactions: DataFrame) -> DataFrame:
    return (
        transactions.withColumn("category", F.lower(F.trim("category")))
        .withColumn("channel", F.lower(F.trim("channel")))
        .withColumn("city", F.trim("city"))
    )


def dedupe(transactions: DataFrame) -> DataFrame:
    first = Window.partitionBy("tid").orderBy("ts")
    return transactions.withColumn("_n", F.row_number().over(first)).where("_n = 1").drop("_n")


def match_labels(labels: DataFrame, known: DataFrame, set_aside: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(labels of a known transaction, the others with their reason). Labels arrive after their
    transactions, often in a later batch: ``known`` holds this batch's and the store's last
    :data:`LABEL_LOOKBACK` of transactions (``tid``, ``cc_num``, ``ts``); a label that matches none is
    quarantined, not dropped, and so is the label of a transaction in ``set_aside`` (quarantined)."""
    matched = labels.join(known.withColumnRenamed("tid", "_tid"), F.col("tid") == F.col("_tid"), "left")
    good = matched.where(F.col("_tid").isNotNull()).drop("_tid")
    quarantined = set_aside.select(F.col("tid").alias("_qtid")).where("_qtid IS NOT NULL").distinct()
    no_match = f"label of no transaction in this batch or the {LABEL_LOOKBACK.days} days before"
    orphans = (
        matched.where(F.col("_tid").isNull())
        .join(quarantined, F.col("tid") == F.col("_qtid"), "left")
        .select(
            *[F.col(c) for c in good.columns if c not in ("cc_num", "ts")],
            F.when(F.col("_qtid").isNotNull(), F.lit(OF_QUARANTINED))
            .otherwise(F.lit(no_match))
            .alias("_reason"),
        )
    )
    return good, orphans


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


@dataclass(frozen=True)
class Group:
    """A feature group a batch publishes a commit to."""

    key: list[str]
    event_time: str
    description: str
    online: bool = True


GROUPS = {
    # Offline only: training reads it point-in-time; serving looks cards up (card_features), never a
    # transaction id. Its online rows cost 120 of the job's 400 s at 10M (docs/benchmarks.md).
    "transactions_features": Group(
        ["tid"], "ts", "Per-transaction card features over 1h-7d windows", online=False
    ),
    "fraud_labels": Group(["tid"], "ts", "Fraud labels (is_fraud) at transaction time", online=False),
    "profile_features": Group(["cc_num"], "as_of", "Card holder age and card expiry"),
    "card_features": Group(
        ["cc_num"],
        "ts",
        "Each card's latest state: window counts and sums, place, categories (serving-time features)",
    ),
}


def feature_frames(
    transactions: DataFrame,
    labels: DataFrame,
    profiles: DataFrame,
    context: DataFrame | None,
    start: datetime,
) -> dict[str, DataFrame]:
    """Each of :data:`GROUPS`' rows for the batch starting at ``start`` (``context``: the published
    transactions of the :data:`CONTEXT` before it)."""
    features = transaction_features(transactions, context).cache()
    return {
        "transactions_features": features,
        "fraud_labels": labels,
        "profile_features": profile_features(profiles, start),
        "card_features": card_features(features, context),
    }
