"""The feature store's Python API end to end on the embedded defaults (Delta on disk, DuckDB, SQLite)."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

import featurestore
from featurestore import FeatureStoreError, FeatureStorePermissionError, SchemaError
from fjord.errors import InvalidNameError, NotFoundError
from fjord.lineage import lineage_graph, raw_sources
from fjord.projects import create_project

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def hours(h: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=h)


@pytest.fixture
def fs():
    create_project("fraud")
    return featurestore.connect("fraud")


def transactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cc_num": [1, 1, 2, 3],
            "ts": [hours(0), hours(1), hours(0), hours(2)],
            "amount_sum_4h": [10.0, 20.0, 5.0, 7.0],
            "tx_count_4h": [1, 2, 1, 1],
            "category": ["grocery", "travel", "grocery", None],
        }
    )


def labels() -> pd.DataFrame:
    return pd.DataFrame(
        {"cc_num": [1, 1, 2, 4], "ts": [hours(0.5), hours(1), hours(-1), hours(0)], "is_fraud": [0, 1, 0, 1]}
    )


@pytest.fixture
def tx_fg(fs):
    fg = fs.get_or_create_feature_group(
        "card_transactions_4h",
        1,
        primary_key=["cc_num"],
        event_time="ts",
        online_enabled=True,
        description="4-hour card aggregates",
    )
    fg.insert(transactions())
    return fg


@pytest.fixture
def label_fg(fs):
    fg = fs.get_or_create_feature_group("fraud_labels", 1, primary_key=["cc_num"], event_time="ts")
    fg.insert(labels())
    return fg


# -- feature groups -----------------------------------------------------------------------------------


def test_insert_read_schema_and_statistics(tx_fg) -> None:
    frame = tx_fg.read()
    assert len(frame) == 4 and list(frame.columns) == [
        "cc_num",
        "ts",
        "amount_sum_4h",
        "tx_count_4h",
        "category",
    ]
    assert [(f.name, f.type, f.primary, f.event_time) for f in tx_fg.schema][:2] == [
        ("cc_num", "int64", True, False),
        ("ts", "timestamp[us, tz=UTC]", False, True),
    ]
    stats = tx_fg.statistics
    amount = stats["features"]["amount_sum_4h"]
    assert stats["rows"] == 4 and amount["min"] == 5.0 and amount["max"] == 20.0 and amount["mean"] == 10.5
    assert sum(amount["histogram"]["counts"]) == 4 and "0.5" in amount["quantiles"]
    category = stats["features"]["category"]
    assert category["nulls"] == 1 and category["top"][0] == {"value": "grocery", "count": 2}
    tx_fg.update_feature_description("amount_sum_4h", "sum of amounts in the last 4 hours")
    assert tx_fg.get_feature("amount_sum_4h").description == "sum of amounts in the last 4 hours"
    with pytest.raises(FeatureStoreError, match="no feature 'nope'"):
        tx_fg.get_feature("nope")


def test_commits_upsert_and_time_travel(fs, tx_fg) -> None:
    first = next(iter(tx_fg.commit_details()))
    update = pd.DataFrame(
        {
            "cc_num": [1, 5],
            "ts": [hours(1), hours(3)],
            "amount_sum_4h": [21.0, 1.0],
            "tx_count_4h": [2, 1],
            "category": ["travel", "fuel"],
        }
    )
    second = tx_fg.insert(update)
    assert second == first + 1
    latest = tx_fg.read().sort_values(["cc_num", "ts"])
    assert len(latest) == 5  # (1, 1h) updated in place, (5, 3h) added
    assert latest[(latest.cc_num == 1) & (latest.ts == hours(1))].amount_sum_4h.item() == 21.0
    assert len(tx_fg.read(as_of=first)) == 4  # time travel by commit id
    details = tx_fg.commit_details()
    assert list(details) == [second, first]
    assert details[second]["rows_inserted"] == 1 and details[second]["rows_updated"] == 1
    at_first = details[first]["committed_at"]
    assert tx_fg.snapshot(at_first).version == first  # time travel by timestamp
    assert tx_fg.get_statistics(first)["rows"] == 4
    with pytest.raises(NotFoundError, match="no commit 99"):
        tx_fg.read(as_of=99)


def test_adding_a_nullable_feature_is_allowed_within_a_version(tx_fg) -> None:
    more = transactions().assign(merchant_risk=[0.1, 0.2, 0.3, None], ts=lambda d: d.ts + pd.Timedelta("1d"))
    tx_fg.insert(more)
    frame = tx_fg.read()
    assert "merchant_risk" in frame.columns and frame.merchant_risk.isna().sum() == 5  # 4 old rows + 1 null
    assert tx_fg.get_feature("merchant_risk").type == "double"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d.assign(amount_sum_4h=d.amount_sum_4h.astype(str)),
            "column 'amount_sum_4h' is string, but",
        ),
        (lambda d: d.drop(columns=["tx_count_4h"]), r"lacks feature\(s\) \['tx_count_4h'\]"),
        (lambda d: d.drop(columns=["cc_num"]), "no primary-key column 'cc_num'"),
        (lambda d: d.drop(columns=["ts"]), "no event-time column 'ts'"),
        (lambda d: d.assign(ts=1), "event-time column 'ts' is int64, expected a timestamp"),
        (lambda d: d.assign(cc_num=[1.0, None, 2.0, 3.0]), "column 'cc_num' is double"),
        (lambda d: d.iloc[0:0], "nothing to insert"),
        (lambda d: pd.concat([d, d.iloc[:1]]), r"duplicate \(primary key, event time\) rows"),
    ],
)
def test_bad_inserts_leave_the_group_unchanged(tx_fg, mutate, message) -> None:
    before = tx_fg.commit_details()
    with pytest.raises((SchemaError, FeatureStoreError), match=message):
        tx_fg.insert(mutate(transactions()))
    assert tx_fg.commit_details() == before
    assert len(tx_fg.read()) == 4
    assert tx_fg.snapshot().version == max(before)


def test_null_keys_are_refused(fs) -> None:
    fg = fs.get_or_create_feature_group("nullable", 1, primary_key=["k"], event_time="ts")
    frame = pa.table({"k": pa.array([1, None], pa.int64()), "ts": pa.array([T0, T0]), "v": [1.0, 2.0]})
    with pytest.raises(SchemaError, match=r"1 row\(s\) have a null primary key or event time"):
        fg.insert(frame)
    assert not fg.exists()  # no table, no orphan files
    assert not fg.commit_details()


def test_group_definition_and_names_are_checked(fs, tx_fg) -> None:
    with pytest.raises(FeatureStoreError, match="exists with primary key"):
        fs.get_or_create_feature_group("card_transactions_4h", 1, primary_key=["tid"], event_time="ts")
    for bad in ("../escape", "Card", "a/b", ""):
        with pytest.raises(InvalidNameError, match="invalid feature group name"):
            fs.get_or_create_feature_group(bad, 1, primary_key=["k"], event_time="ts")
    with pytest.raises(FeatureStoreError, match="needs a primary key"):
        fs.get_or_create_feature_group("x", 1, primary_key=[], event_time="ts")
    with pytest.raises(FeatureStoreError, match="positive integer"):
        fs.get_or_create_feature_group("x", 0, primary_key=["k"], event_time="ts")
    listed = r"unknown feature group fraud\.ghost \(groups of fraud: card_transactions_4h v1\)"
    with pytest.raises(NotFoundError, match=listed):  # the error lists the groups that exist
        fs.get_feature_group("ghost")
    with pytest.raises(FeatureStoreError, match="cannot insert a list"):
        tx_fg.insert([1, 2])
    assert [g.name for g in fs.get_feature_groups()] == ["card_transactions_4h"]
    assert fs.get_feature_group("card_transactions_4h").version == 1


def test_search(fs, tx_fg) -> None:
    hits = fs.search("amount")
    assert hits == [
        {
            "project": "fraud",
            "feature_group": "card_transactions_4h",
            "version": 1,
            "description": "4-hour card aggregates",
            "features": ["amount_sum_4h"],
        }
    ]
    assert fs.search("4-hour")[0]["feature_group"] == "card_transactions_4h"
    assert fs.search("zzz") == []


def test_project_isolation_and_sharing(fs, tx_fg) -> None:
    create_project("risk")
    risk = featurestore.connect("risk")
    with pytest.raises(FeatureStorePermissionError, match="is not shared with project 'risk'") as info:
        risk.get_feature_group("card_transactions_4h", 1, project="fraud")
    assert isinstance(info.value, PermissionError)
    assert risk.search("amount") == []
    fs.share(tx_fg, with_project="risk")
    shared = risk.get_feature_group("card_transactions_4h", 1, project="fraud")
    assert len(shared.read()) == 4 and risk.search("amount")[0]["project"] == "fraud"
    with pytest.raises(FeatureStorePermissionError, match="for reading only"):
        shared.insert(transactions())
    with pytest.raises(FeatureStorePermissionError, match="only project 'fraud' can share"):
        risk.share(shared, with_project="fraud")


# -- queries and feature views ------------------------------------------------------------------------


def test_point_in_time_query(label_fg, tx_fg) -> None:
    frame = label_fg.select_all().join(tx_fg.select(["amount_sum_4h"]), on=["cc_num"]).read()
    got = list(zip(frame.cc_num, frame.ts, frame.amount_sum_4h.fillna(-1), strict=True))
    assert got == [(2, hours(-1), -1), (4, hours(0), -1), (1, hours(0.5), 10.0), (1, hours(1), 20.0)]


def test_max_lookback_bounds_staleness(label_fg, tx_fg) -> None:
    query = label_fg.select_all().join(
        tx_fg.select(["amount_sum_4h"]), on=["cc_num"], max_lookback=timedelta(minutes=20)
    )
    frame = query.read()
    assert frame.amount_sum_4h.isna().tolist() == [True, True, True, False]  # 30 min old: too stale


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda lf, tf: lf.select(["nope"]), r"unknown feature\(s\) \['nope'\]"),
        (
            lambda lf, tf: lf.select_all().join(tf.select(["amount_sum_4h", "x"])),
            r"unknown feature\(s\) \['x'\]",
        ),
        (lambda lf, tf: lf.select_all().join(tf.select(["amount_sum_4h"]), on=["tid"]), "no common key"),
        (
            lambda lf, tf: lf.select_all().join(
                tf.select(["amount_sum_4h"]), left_on=["cc_num"], right_on=["tx_count_4h"]
            ),
            "must be the whole primary key",
        ),
        (
            lambda lf, tf: lf.select_all().join(tf.select(["tx_count_4h"])).join(tf.select(["tx_count_4h"])),
            "clashes",
        ),
    ],
)
def test_bad_queries(label_fg, tx_fg, build, message) -> None:
    with pytest.raises(FeatureStoreError, match=message):
        build(label_fg, tx_fg)


@pytest.fixture
def fv(fs, label_fg, tx_fg):
    query = label_fg.select_all().join(tx_fg.select(["amount_sum_4h", "tx_count_4h"]), on=["cc_num"])
    return fs.get_or_create_feature_view("fraud", 1, query=query, labels=["is_fraud"])


def test_training_data_records_commits_and_lineage(fs, fv, label_fg, tx_fg) -> None:
    version, job = fv.create_training_data(data_format="parquet")
    assert version == 1 and job.status == "succeeded"
    X, y = fv.get_training_data(version)
    assert list(X.columns) == ["amount_sum_4h", "tx_count_4h"] and list(y.columns) == ["is_fraud"]
    assert len(X) == 4 and y.is_fraud.tolist() == [0, 1, 0, 1]
    commits = fv.training_dataset_commits(version)
    assert commits == {label_fg.ref: 0, tx_fg.ref: 0}
    tree = lineage_graph(fs.project.fs.uri("TrainingDatasets/fraud_1/1"), "1")
    assert {(n.artifact.uri, n.artifact.version) for n in tree.inputs} == {
        (label_fg.location, "0"),
        (tx_fg.location, "0"),
    }
    assert all(n.run.stage == "featurestore.publish" for n in tree.inputs)
    assert raw_sources(tree) == []  # inserts by hand have no upstream; ETL runs will add the raw batches
    assert fs.get_feature_view("fraud", 1).labels == ["is_fraud"]


def test_training_dataset_statistics_are_stored_with_the_version(fs, fv) -> None:
    version, _ = fv.create_training_data()
    stats = fv.get_training_dataset_statistics(version)
    assert stats["version"] == version and stats["rows"] == 4
    assert set(stats["features"]) == {"amount_sum_4h", "tx_count_4h", "is_fraud"}
    amount = stats["features"]["amount_sum_4h"]
    X, _ = fv.get_training_data(version)
    known = X.amount_sum_4h.dropna()  # a label older than every transaction joins nothing
    assert (
        amount["count"] == len(known) and amount["nulls"] == 4 - len(known) and amount["kind"] == "discrete"
    )
    assert amount["edges"] == sorted(set(known)) and amount["cdf"][-1] == 1.0
    assert sum(amount["psi_counts"]) == len(known) and amount["std"] == pytest.approx(known.std(ddof=0))
    assert fs.project.fs.exists(f"TrainingDatasets/fraud_1/{version}/_statistics.json")
    with pytest.raises(NotFoundError, match="no training dataset version 9"):
        fv.get_training_dataset_statistics(9)


def test_training_data_is_rebuilt_bit_for_bit_after_new_commits(fv, tx_fg) -> None:
    version, _ = fv.create_training_data()
    tx_fg.insert(transactions().assign(amount_sum_4h=lambda d: d.amount_sum_4h * 100))  # same keys: updates
    rebuilt, _ = fv.recreate_training_data(version)
    assert rebuilt == version + 1
    assert fv.read_training_dataset(rebuilt).equals(fv.read_training_dataset(version))
    fresh, _ = fv.create_training_data()
    assert fv.get_training_data(fresh)[0].amount_sum_4h.max() == 2000.0  # new data by default


def test_train_test_split_and_batch_data(fv) -> None:
    X_train, X_test, _, y_test = fv.train_test_split(test_size=0.25, time_ordered=True)
    assert len(X_train) == 3 and len(X_test) == 1 and y_test.is_fraud.tolist() == [1]  # the latest row
    batch = fv.get_batch_data(start_time=hours(0), end_time=hours(1))
    assert list(batch.columns) == ["cc_num", "ts", "amount_sum_4h", "tx_count_4h"]  # no label
    assert batch.ts.tolist() == [hours(0), hours(0.5)]
    # the same bounds as ISO strings (what fg.read(as_of=...) takes too), a date, a naive datetime (UTC)
    iso = fv.get_batch_data(
        start_time=hours(0).isoformat().replace("+00:00", "Z"), end_time=hours(1).isoformat()
    )
    naive = fv.get_batch_data(start_time=hours(0).tz_localize(None).to_pydatetime(), end_time=hours(1))
    assert iso.equals(batch) and naive.equals(batch)
    assert len(fv.get_batch_data(start_time=hours(0).date())) >= len(batch)
    with pytest.raises(FeatureStoreError, match="start_time 'yesterday' is not an ISO 8601 time"):
        fv.get_batch_data(start_time="yesterday")
    with pytest.raises(FeatureStoreError, match="is not before end_time"):
        fv.get_batch_data(start_time=hours(1), end_time=hours(0))
    with pytest.raises(FeatureStoreError, match="test_size"):
        fv.train_test_split(test_size=1.5)


def test_bad_feature_views(fs, fv, label_fg, tx_fg) -> None:
    with pytest.raises(FeatureStoreError, match=r"label\(s\) \['fraud'\]"):
        fs.get_or_create_feature_view("v2", 1, query=label_fg.select_all(), labels=["fraud"])
    with pytest.raises(FeatureStoreError, match="exists with another query"):
        fs.get_or_create_feature_view("fraud", 1, query=label_fg.select_all(), labels=["is_fraud"])
    with pytest.raises(NotFoundError, match=r"no training dataset version 7 \(versions: none\)"):
        fv.get_training_data(7)
    with pytest.raises(FeatureStoreError, match="data_format"):
        fv.create_training_data(data_format="csv")


def test_online_feature_vectors(fs, fv, tx_fg) -> None:
    """On the embedded SQLite online store; Redis: tests/integration/test_featurestore_services.py."""
    store = featurestore.connect("fraud")
    fg = store.get_feature_group("card_transactions_4h", 1)
    view = store.get_feature_view("fraud", 1)  # tx_fg's insert wrote online, to the configured store
    assert view.get_feature_vector({"cc_num": 1}) == [20.0, 2]  # the newest row of key 1
    assert view.get_feature_vectors([{"cc_num": 2}, {"cc_num": 99}]) == [[5.0, 1], [None, None]]
    assert view.get_feature_vector({"cc_num": 3}, return_type="dict") == {
        "amount_sum_4h": 7.0,
        "tx_count_4h": 1,
    }
    late = pd.DataFrame(
        {"cc_num": [1], "ts": [hours(-5)], "amount_sum_4h": [0.0], "tx_count_4h": [0], "category": ["late"]}
    )
    fg.insert(late)
    assert view.get_feature_vector({"cc_num": 1}) == [20.0, 2]  # a late row does not roll it back
    with pytest.raises(FeatureStoreError, match="lacks the primary key 'cc_num'"):
        view.get_feature_vector({"card": 1})
    fg.online_store.drop(fg.online_table)


@pytest.mark.slow
def test_tfrecord_training_data(fv) -> None:
    import tensorflow as tf

    version, _ = fv.create_training_data(data_format="tfrecord")
    fs = fv._store.project.fs
    files = fs.listdir(f"TrainingDatasets/fraud_1/{version}/tfrecord")
    records = list(
        tf.data.TFRecordDataset([fs.path(f"TrainingDatasets/fraud_1/{version}/tfrecord/{f}") for f in files])
    )
    example = tf.train.Example.FromString(records[2].numpy())
    assert len(records) == 4
    assert example.features.feature["amount_sum_4h"].float_list.value == [10.0]
    assert example.features.feature["is_fraud"].int64_list.value == [0]


def test_cli_read_side(fs, fv, tx_fg, capsys) -> None:
    from fjord.cli.main import main

    fv.create_training_data()
    assert main(["featurestore", "list", "fraud"]) == 0
    out = capsys.readouterr().out
    assert "card_transactions_4h" in out and "fraud_labels" in out and "is_fraud" in out
    assert main(["featurestore", "show", "fraud", "card_transactions_4h"]) == 0
    out = capsys.readouterr().out
    assert "amount_sum_4h" in out and "primary key" in out and "commit 0" in out
    assert main(["featurestore", "search", "fraud", "amount"]) == 0
    assert "card_transactions_4h" in capsys.readouterr().out
    assert main(["featurestore", "commits", "fraud", "card_transactions_4h"]) == 0
    assert "featurestore.publish-" in capsys.readouterr().out
    # A second commit that upserts 2 of the 4 rows and adds 1: the group holds 5, the commit 3.
    changed = transactions().iloc[:2].assign(amount_sum_4h=1.0)
    tx_fg.insert(pd.concat([changed, changed.iloc[:1].assign(ts=hours(3))]))
    assert main(["featurestore", "show", "fraud", "card_transactions_4h"]) == 0
    out = capsys.readouterr().out
    assert "5 in the group" in out and "(3 rows in that commit)" in out
    for command in (["show", "fraud", "card_transactions_4h"], ["search", "fraud", "amount"],
                    ["commits", "fraud", "card_transactions_4h"]):  # fmt: skip
        assert main(["featurestore", *command, "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown
    assert shown[0]["commit_id"] == 1 and shown[0]["rows"] == 3
    assert main(["featurestore", "statistics", "fraud", "card_transactions_4h", "--json"]) == 0
    assert '"histogram"' in capsys.readouterr().out
    assert main(["featurestore", "statistics", "fraud", "fraud", "-t", "1"]) == 0
    out = capsys.readouterr().out
    assert "training dataset fraud_1 v1: 4 rows" in out and "is_fraud" in out
    assert main(["featurestore", "statistics", "fraud", "fraud", "-t", "1", "--commit", "0"]) == 2
    assert main(["featurestore", "statistics", "fraud", "fraud", "-t", "5"]) == 3
    assert "no training dataset version 5" in capsys.readouterr().err
    assert main(["featurestore", "show", "fraud", "ghost"]) == 3
    assert "unknown feature group fraud.ghost" in capsys.readouterr().err
    assert main(["featurestore", "list", "nope"]) == 3
