"""The Spark ETL and validation job on real batches, good and bad (real Spark, real GX, real store)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import featurestore
from fjord.lineage import lineage_graph, raw_sources
from fjord.projects import create_project
from jobs.etl.demo_data import DemoSpec, generate
from jobs.etl.job import BatchRejected, EtlError, EtlSpec, run
from jobs.etl.main import main

pytestmark = [pytest.mark.spark, pytest.mark.slow]
GROUPS = ("transactions_features", "fraud_labels", "profile_features", "card_features")


@pytest.fixture
def project(spark):
    project = create_project("fraud")
    generate(project.fs, DemoSpec(rows=6000, days=2, seed=5))
    return project


def _commits(project) -> dict[str, int]:
    fs = featurestore.connect(project.name)
    return {g.name: len(g.commit_details()) for g in fs.get_feature_groups() if g.name in GROUPS}


def _reland(project, batch: str, mutate, *, success: bool = True, fmt: str = "parquet") -> None:
    """Re-land ``batch`` with its transactions (or labels) changed by ``mutate(name, table)``."""
    rel = f"Resources/landing/{batch}"
    tables = {
        n: pq.read_table(project.fs.path(f"{rel}/{n}.parquet"))
        for n in ("transactions", "labels", "profiles")
    }
    project.fs.rm(rel, recursive=True)
    for name, table in tables.items():
        table = mutate(name, table)
        with project.fs.open(f"{rel}/{name}.{fmt}", "wb") as handle:
            (pacsv.write_csv if fmt == "csv" else pq.write_table)(table, handle)
    if success:
        project.fs.write_text(f"{rel}/_SUCCESS", "{}")


def test_good_batches_publish_once_with_lineage_and_docs(project) -> None:
    first = run(EtlSpec(project="fraud", batch="2026-11-01"))
    second = run(EtlSpec(project="fraud", batch="2026-11-02"))
    assert first.validation.success and first.quarantined == {"transactions": 0, "labels": 0, "profiles": 0}
    assert first.commits == dict.fromkeys(GROUPS, 0) and second.commits == dict.fromkeys(GROUPS, 1)
    assert project.fs.exists(first.report_uri.split("/Projects/fraud/")[1] + "/index.html")  # GX Data Docs
    fs = featurestore.connect("fraud")
    tx = fs.get_feature_group("transactions_features", 1)
    rows = len(tx.read())
    assert rows == first.rows_in + second.rows_in
    assert {"amount_sum_1h", "tx_count_7d", "speed_prev_kmh", "category_freq_7d"} <= {
        f.name for f in tx.schema
    }
    again = run(EtlSpec(project="fraud", batch="2026-11-01"))  # a scheduler's retry of a published batch
    assert len(tx.read()) == rows
    # no new commit: the ids are those of the commits that already hold the rows (the latest)
    assert again.commits == second.commits and sorted(again.unchanged) == sorted(GROUPS)
    assert _commits(project) == dict.fromkeys(GROUPS, 2)
    labels = fs.get_feature_group("fraud_labels", 1)
    view = fs.get_or_create_feature_view(
        "fraud",
        1,
        query=labels.select(["is_fraud"]).join(tx.select(["amount", "tx_count_1h"]), on=["tid"]),
        labels=["is_fraud"],
    )
    version, job = view.create_training_data()
    sources = {a.uri.rsplit("/", 2)[-2] for a in raw_sources(lineage_graph(job.outputs[0].uri, str(version)))}
    assert sources == {"2026-11-01", "2026-11-02"}  # back through the ETL runs to the landing batches


def test_malformed_csv_rows_are_quarantined_with_their_reason(project) -> None:
    def break_rows(name, table):
        if name != "transactions":
            return table
        amounts = pc.cast(table.column("amount"), pa.string())
        broken = pa.concat_arrays([pa.array(["not-a-number"] * 3), amounts.combine_chunks()[3:]])
        return table.set_column(table.schema.get_field_index("amount"), "amount", broken)

    _reland(project, "2026-11-01", break_rows, fmt="csv")
    result = run(EtlSpec(project="fraud", batch="2026-11-01"))
    assert result.quarantined["transactions"] == 3
    quarantined = project.fs.listdir("Resources/quarantine/2026-11-01/transactions")
    text = project.fs.read_text(f"Resources/quarantine/2026-11-01/transactions/{quarantined[0]}")
    assert "malformed record" in text and "not-a-number" in text
    assert (
        len(featurestore.connect("fraud").get_feature_group("transactions_features").read())
        == result.rows_in - 3
    )


@pytest.mark.parametrize(
    ("mutate", "failed"),
    [
        (
            lambda n, t: (
                t.set_column(1, "cc_num", pa.array([None] * 500 + t.column(1).to_pylist()[500:], pa.int64()))
                if n == "transactions"
                else t
            ),
            r"500 of [\d,]+ transactions rows \(\d+\.\d%\) break cc_num: missing, more than the 1%",
        ),
        (
            lambda n, t: t.set_column(3, "amount", pc.negate(t.column(3))) if n == "transactions" else t,
            r"transactions rows \(100\.0%\) break amount: outside \[0, 100000\]",
        ),
        (
            lambda n, t: (
                t.set_column(3, "amount", pc.multiply(t.column(3), 1000)) if n == "transactions" else t
            ),
            r"expect_column_mean_to_be_between\(amount\)|amount: outside",
        ),
        (
            lambda n, t: (
                t.set_column(1, "is_fraud", pa.array([1] * t.num_rows, pa.int64())) if n == "labels" else t
            ),
            r"labels: expect_column_mean_to_be_between\(is_fraud\)",
        ),
        (
            lambda n, t: t.slice(0, 0) if n in ("transactions", "labels") else t,
            "expect_table_row_count_to_be_between",
        ),
    ],
    ids=["null-cc_num", "negative-amounts", "huge-amounts", "fraud-rate", "empty"],
)
def test_bad_batches_are_rejected_and_publish_nothing(project, mutate, failed) -> None:
    _reland(project, "2026-11-01", mutate)
    with pytest.raises(BatchRejected, match=failed) as info:
        run(EtlSpec(project="fraud", batch="2026-11-01"))
    message = str(info.value)
    assert "nothing published" in message
    assert "Logs/validation/etl-" in message or "Resources/quarantine/2026-11-01" in message
    assert _commits(project) == {}  # the store is unchanged


def test_a_few_broken_rows_are_quarantined_with_column_and_rule_and_the_batch_goes_on(project) -> None:
    broken_tids: list[int] = []

    def ten_negative_amounts(name, table):
        if name != "transactions":
            return table
        amounts = table.column("amount").to_pylist()
        broken_tids.extend(table.column("tid").to_pylist()[:10])
        return table.set_column(
            3, "amount", pa.array([-a for a in amounts[:10]] + amounts[10:], pa.float64())
        )

    _reland(project, "2026-11-01", ten_negative_amounts)
    result = run(EtlSpec(project="fraud", batch="2026-11-01"))
    assert result.validation.success and result.commits  # published, the ten rows set aside
    assert result.reasons["transactions: amount: outside [0, 100000]"] == 10
    labels_of_them = result.reasons.get("labels: label of a quarantined transaction", 0)
    assert labels_of_them == result.quarantined["labels"] > 0  # their labels, counted as such
    summary = result.summary()
    assert "10 transactions: amount: outside [0, 100000]" in summary
    assert "Resources/quarantine/2026-11-01" in summary
    published = featurestore.connect("fraud").get_feature_group("transactions_features").read()
    assert not set(broken_tids) & set(published.tid) and len(published) == result.rows_in - 10
    files = project.fs.listdir("Resources/quarantine/2026-11-01/transactions")
    text = "".join(project.fs.read_text(f"Resources/quarantine/2026-11-01/transactions/{f}") for f in files)
    assert text.count("amount: outside [0, 100000]") == 10
    report = project.fs.read_text(result.report_uri.split("/Projects/fraud/")[1] + "/results.json")
    assert '"expect_column_values_to_be_between(amount)": "quarantine"' in report  # which rule did what


def test_schema_drift_and_incomplete_batches_are_refused(project, capsys) -> None:
    _reland(
        project,
        "2026-11-01",
        lambda n, t: (
            t.rename_columns(["card_number" if c == "cc_num" else c for c in t.column_names])
            if n == "transactions"
            else t
        ),
    )
    with pytest.raises(EtlError, match=r"schema drift: missing \['cc_num'\], unexpected \['card_number'\]"):
        run(EtlSpec(project="fraud", batch="2026-11-01"))
    _reland(project, "2026-11-02", lambda n, t: t, success=False)
    assert main(["--project", "fraud", "--batch", "2026-11-02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no _SUCCESS" in err[0]
    assert main(["--project", "fraud", "--batch", "2026-13-01"]) == 2
    assert "batch must be a date" in capsys.readouterr().err
    assert main(["--project", "fraud", "--batch", "2026-12-01"]) == 2
    assert "no landing batch" in capsys.readouterr().err
    assert _commits(project) == {}


def test_a_label_that_arrives_in_a_later_batch_joins_its_transaction_and_an_orphan_is_quarantined(
    project,
) -> None:
    late: dict[str, pa.Table] = {}

    def hold_back_one_label(name, table):
        if name != "labels":
            return table
        late["row"] = table.slice(0, 1)  # this label will come with the next batch
        return table.slice(1)

    def add_late_and_orphan_labels(name, table):
        if name != "labels":
            return table
        orphan = late["row"].set_column(0, "tid", pa.array([999_999_999], pa.int64()))
        return pa.concat_tables([table, late["row"].cast(table.schema), orphan.cast(table.schema)])

    _reland(project, "2026-11-01", hold_back_one_label)
    _reland(project, "2026-11-02", add_late_and_orphan_labels)
    first = run(EtlSpec(project="fraud", batch="2026-11-01", validate_data=False))
    second = run(EtlSpec(project="fraud", batch="2026-11-02", validate_data=False))
    assert first.quarantined["labels"] == 0 and second.quarantined["labels"] == 1  # the orphan only
    labels = featurestore.connect("fraud").get_feature_group("fraud_labels", 1).read()
    tid = late["row"].column("tid")[0].as_py()
    row = labels[labels.tid == tid]
    assert len(row) == 1 and row.ts.iloc[0].date().isoformat() == "2026-11-01"  # its transaction's time
    quarantined = project.fs.listdir("Resources/quarantine/2026-11-02/labels")
    text = "".join(project.fs.read_text(f"Resources/quarantine/2026-11-02/labels/{f}") for f in quarantined)
    assert "999999999" in text and "label of no transaction" in text


def test_corrupt_landing_files_are_refused_in_one_line_naming_the_file(project, capsys) -> None:
    rel = "Resources/landing/2026-11-01"
    cases = [
        ("transactions.parquet", b"", "not a readable Parquet file"),
        ("transactions.parquet", None, "not a readable Parquet file"),  # truncated
        ("transactions.parquet", bytes(range(256)) * 40, "not a readable Parquet file"),
    ]
    whole = project.fs.read_bytes(f"{rel}/transactions.parquet")
    for name, content, message in cases:
        project.fs.write_bytes(f"{rel}/{name}", whole[: len(whole) // 2] if content is None else content)
        assert main(["--project", "fraud", "--batch", "2026-11-01"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "transactions.parquet" in err[0], err
    project.fs.write_bytes(f"{rel}/transactions.parquet", whole)

    def amount_as_text(name, table):
        if name != "transactions":
            return table
        index = table.column_names.index("amount")
        return table.set_column(index, "amount", pc.cast(table.column("amount"), pa.string()))

    _reland(project, "2026-11-02", amount_as_text)
    assert main(["--project", "fraud", "--batch", "2026-11-02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'amount' holds string, not double" in err[0], err

    project.fs.rm(rel, recursive=True)
    project.fs.write_bytes(f"{rel}/transactions.csv", bytes(range(128, 256)) * 10)
    for other in ("labels", "profiles"):
        project.fs.write_bytes(f"{rel}/{other}.csv", b"x\n")
    project.fs.write_text(f"{rel}/_SUCCESS", "{}")
    assert main(["--project", "fraud", "--batch", "2026-11-01"]) == 2
    assert "not a CSV file with a UTF-8 header line" in capsys.readouterr().err
    assert _commits(project) == {}


def test_batches_landed_in_either_order_give_the_same_features(spark) -> None:
    """A late batch is context for the later ones already published: they are recomputed with it."""
    held: dict[str, pa.Table] = {}

    def hold_back_one_label(name, table):
        if name != "labels":
            return table
        held["row"] = table.slice(0, 1)  # this label of 2026-11-01 lands with 2026-11-02
        return table.slice(1)

    def add_the_held_label(name, table):
        return pa.concat_tables([table, held["row"].cast(table.schema)]) if name == "labels" else table

    keys = {
        "transactions_features": ["tid"],
        "fraud_labels": ["tid"],
        "profile_features": ["cc_num", "as_of"],
        "card_features": ["cc_num", "ts"],
    }
    published = {}
    orders = {"inorder": ["2026-11-01", "2026-11-02"], "reversed": ["2026-11-02", "2026-11-01"]}
    for name, order in orders.items():
        project = create_project(name)
        generate(project.fs, DemoSpec(rows=3000, days=2, seed=5))
        _reland(project, "2026-11-01", hold_back_one_label)
        _reland(project, "2026-11-02", add_the_held_label)
        results = [run(EtlSpec(project=name, batch=batch, validate_data=False)) for batch in order]
        store = featurestore.connect(name)
        published[name] = {
            group: store.get_feature_group(group, 1).read().sort_values(key).reset_index(drop=True)
            for group, key in keys.items()
        }
        later = [r.batch for r in results[-1].recomputed]
        assert later == (["2026-11-02"] if name == "reversed" else [])
    assert results[-1].recomputed[0].quarantined["labels"] == 0  # the held label found its transaction
    assert "recomputed the later batch(es) 2026-11-02" in results[-1].summary()
    for group in keys:
        pd.testing.assert_frame_equal(published["inorder"][group], published["reversed"][group])
    # the windows of 2026-11-02 reach into 2026-11-01: without the recompute the orders would differ
    features = published["reversed"]["transactions_features"]
    second_day = features[features.ts.dt.day == 2]
    assert (second_day.tx_count_7d > second_day.tx_count_24h).any()
