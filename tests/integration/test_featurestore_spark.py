"""The feature store with Spark: DataFrame inserts (no collect to the driver) and the Spark join engine."""

from __future__ import annotations

import pandas as pd
import pytest

import featurestore
from fjord.fs import SharedFS
from fjord.projects import create_project

pytestmark = pytest.mark.spark

T0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture
def fs():
    create_project("fraud")
    return featurestore.connect("fraud")


def test_spark_dataframe_insert_streams_through_staging(spark, fs) -> None:
    frame = spark.range(0, 5000).selectExpr(
        "id % 500 AS cc_num",
        "timestamp_micros(1704067200000000 + id * 60000000) AS ts",
        "cast(id AS double) * 1.5 AS amount",
        "cast(id % 7 AS int) AS n",
    )
    fg = fs.get_or_create_feature_group("tx", 1, primary_key=["cc_num"], event_time="ts", online_enabled=True)
    commit = fg.insert(frame)
    table = fg.read()
    assert len(table) == 5000 and table.amount.sum() == pytest.approx(1.5 * sum(range(5000)))
    assert fg.get_feature("n").type == "int64" and fg.get_feature("ts").type == "timestamp[us, tz=UTC]"
    assert fg.statistics["rows"] == 5000
    assert fg.read(dataframe_type="spark").count() == 5000  # Spark reads the snapshot's files
    table_files = SharedFS(fg.location).find(suffix=".parquet")
    # The executors' files are the commit's files: committed in place, not copied.
    assert {u.rsplit("/", 2)[-2] for u in fg.snapshot().file_uris} == {f.split("/")[0] for f in table_files}
    bad = frame.union(frame.limit(1))
    with pytest.raises(featurestore.SchemaError, match="duplicate"):
        fg.insert(bad)
    assert fg.snapshot().version == commit
    assert SharedFS(fg.location).find(suffix=".parquet") == table_files  # the failed insert's files are gone


def test_engines_agree_through_the_api(spark, fs) -> None:
    labels = pd.DataFrame(
        {
            "cc_num": [1, 1, 2, 3],
            "ts": [T0 + pd.Timedelta(minutes=m) for m in (5, 10, 0, 7)],
            "is_fraud": [0, 1, 0, 1],
        }
    )
    tx = pd.DataFrame(
        {
            "cc_num": [1, 1, 2],
            "ts": [T0 + pd.Timedelta(minutes=m) for m in (0, 10, 1)],
            "amount": [1.0, None, 3.0],
            "merchant": ["a", "b", "c"],
        }
    )
    label_fg = fs.get_or_create_feature_group("labels", 1, primary_key=["cc_num"], event_time="ts")
    tx_fg = fs.get_or_create_feature_group("tx", 1, primary_key=["cc_num"], event_time="ts")
    label_fg.insert(labels)
    tx_fg.insert(tx)
    query = label_fg.select_all().join(tx_fg.select(["amount", "merchant"]), on=["cc_num"], prefix="tx_")
    duck = query.read(engine="duckdb")
    assert duck.equals(query.read(engine="spark"))
    assert duck.tx_merchant.tolist() == [None, "a", None, "b"]  # (2, 0min): its only row is later
    fv = fs.get_or_create_feature_view("fraud", 1, query=query, labels=["is_fraud"])
    by_duck, _ = fv.create_training_data(engine="duckdb")
    by_spark, _ = fv.create_training_data(engine="spark")
    assert fv.read_training_dataset(by_duck).equals(fv.read_training_dataset(by_spark))


def test_join_keys_need_not_be_selected(spark, fs) -> None:
    """A left-side key used only to join (not selected) is read by both engines, not output."""
    labels = fs.get_or_create_feature_group("labels", 1, primary_key=["tid"], event_time="ts")
    profiles = fs.get_or_create_feature_group("profiles", 1, primary_key=["cc_num"], event_time="ts")
    labels.insert(pd.DataFrame({"tid": [1, 2], "ts": [T0, T0], "cc_num": [7, 8], "is_fraud": [0, 1]}))
    profiles.insert(pd.DataFrame({"cc_num": [7, 8], "ts": [T0, T0], "age": [30.0, 40.0]}))
    query = labels.select(["is_fraud"]).join(profiles.select(["age"]), on=["cc_num"])
    duck = query.read(engine="duckdb")
    assert list(duck.columns) == ["tid", "ts", "is_fraud", "age"] and duck.age.tolist() == [30.0, 40.0]
    assert duck.equals(query.read(engine="spark"))
