from datetime import date

import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fjord.cli.main import main
from fjord.projects import create_project
from jobs.etl.demo_data import TRANSACTION_SCHEMA, DemoSpec, generate, recent_start


@pytest.fixture
def project():
    return create_project("fraud")


def test_batches_are_published_deterministic_and_realistic(project) -> None:
    spec = DemoSpec(rows=60_000, days=3, seed=7, start=date(2026, 11, 1))
    assert generate(project.fs, spec) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    batch = "Resources/landing/2026-11-02"
    assert project.fs.is_published(batch)
    assert project.fs.listdir(batch) == ["labels.parquet", "profiles.parquet", "transactions.parquet"]
    tx = pq.read_table(project.fs.path(f"{batch}/transactions.parquet"))
    labels = pq.read_table(project.fs.path(f"{batch}/labels.parquet"))
    assert tx.schema == TRANSACTION_SCHEMA and tx.num_rows >= 20_000
    assert tx.column("tid").to_pylist() == labels.column("tid").to_pylist()
    assert len(set(tx.column("tid").to_pylist())) == tx.num_rows
    days = {t.date() for t in tx.column("ts").to_pylist()}
    assert days == {date(2026, 11, 2)}  # each batch holds its own day
    fraud = labels.column("is_fraud").to_numpy()
    assert 0.005 <= fraud.mean() <= 0.02  # the class imbalance of real card data
    reported = labels.column("reported_at").to_numpy() > tx.column("ts").to_numpy()
    assert reported.all()  # labels are known only later
    generate(project.fs, spec)  # same seed: the same bytes
    assert pq.read_table(project.fs.path(f"{batch}/transactions.parquet")).equals(tx)


def test_fraud_is_learnable_beyond_the_raw_amount(project) -> None:
    """A model on simple per-card features beats the same model on the raw amount by a clear margin."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    generate(project.fs, DemoSpec(rows=60_000, days=2, seed=3))
    frames = []
    for day in ("2026-11-01", "2026-11-02"):
        tx = pq.read_table(project.fs.path(f"Resources/landing/{day}/transactions.parquet")).to_pandas()
        labels = pq.read_table(project.fs.path(f"Resources/landing/{day}/labels.parquet")).to_pandas()
        frames.append(tx.merge(labels[["tid", "is_fraud"]], on="tid"))
    df = pd.concat(frames).sort_values(["cc_num", "ts"])
    by_card = df.groupby("cc_num")
    df["gap_s"] = by_card.ts.diff().dt.total_seconds().fillna(1e7)
    df["moved_deg"] = (by_card.lat.diff().abs() + by_card.lon.diff().abs()).fillna(0)
    df["hour"] = df.ts.dt.hour
    df["risky"] = df.category.isin(["electronics", "jewelry", "gift_card"]).astype(int)
    df = df.sort_values("ts")
    train, test = df[df.ts.dt.day == 1], df[df.ts.dt.day == 2]
    features = ["gap_s", "moved_deg", "hour", "risky", "amount"]

    def auc(columns: list[str]) -> float:
        model = HistGradientBoostingClassifier(random_state=0).fit(train[columns], train.is_fraud)
        return roc_auc_score(test.is_fraud, model.predict_proba(test[columns])[:, 1])

    assert auc(features) > auc(["amount"]) + 0.15


def test_csv_landing_and_the_cli(project, capsys) -> None:
    assert (
        main(["demo", "data", "--project", "fraud", "--rows", "3000", "--days", "2", "--format", "csv"]) == 0
    )
    # by default the batches end yesterday (UTC), where a daily schedule's default window looks
    yesterday = recent_start(1)
    before = recent_start(2).isoformat()
    assert f"landed 2 batches in {project.fs.uri('Resources/landing')}: {before} .. {yesterday}" in (
        capsys.readouterr().out
    )
    assert recent_start(2, today=date(2026, 3, 1)) == date(2026, 2, 27)
    table = pacsv.read_csv(project.fs.path(f"Resources/landing/{yesterday}/transactions.csv"))
    assert table.num_rows > 1000 and "amount" in table.column_names
    assert main(["demo", "data", "--rows", "1", "--days", "3"]) == 1
    assert "need at least one row per day" in capsys.readouterr().err
    assert main(["demo", "data", "--format", "xml"]) == 1


def test_suites_load_and_refuse_silent_duplicates(tmp_path) -> None:
    import json
    from datetime import datetime

    from jobs.etl.validation import load_suite

    suite = load_suite(
        "transactions", {"batch_start": datetime(2026, 11, 1), "batch_end": datetime(2026, 11, 2)}
    )
    freshness = [e for e in suite if e["type"] == "expect_column_min_to_be_between"]
    assert freshness[0]["kwargs"]["min_value"] == datetime(2026, 11, 1)
    assert {e["on_failure"] for e in suite} == {"reject", "quarantine", "warn"}
    twice = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}
    (tmp_path / "dup.json").write_text(json.dumps({"expectations": [twice, {**twice, "on_failure": "warn"}]}))
    with pytest.raises(ValueError, match="repeats expect_column_values_to_not_be_null on column 'x'"):
        load_suite("dup", {}, tmp_path)
    unique = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "x"}}
    for bad, message in [
        ({**twice, "on_failure": "fatal"}, "on_failure 'fatal'"),
        ({**twice, "severity": "critical"}, "'severity' is now 'on_failure'"),
        ({**unique, "on_failure": "quarantine"}, "cannot quarantine rows"),
        ({**twice, "on_failure": "quarantine", "max_fraction": 2}, "max_fraction 2"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps({"expectations": [bad]}))
        with pytest.raises(ValueError, match=message):
            load_suite("bad", {}, tmp_path)


def test_landed_batches_are_never_overwritten_and_a_typo_creates_no_project(project, capsys) -> None:
    spec = DemoSpec(rows=3000, days=2, seed=1)
    generate(project.fs, spec)
    landed = project.fs.read_bytes("Resources/landing/2026-11-02/transactions.parquet")
    assert generate(project.fs, spec) == ["2026-11-01", "2026-11-02"]  # the same spec: kept as it is
    other = ["--rows", "3000", "--days", "3", "--seed", "2", "--start", "2026-11-01"]
    assert main(["demo", "data", "--project", "fraud", *other]) == 4
    assert "already landed, by other data" in capsys.readouterr().err
    assert project.fs.read_bytes("Resources/landing/2026-11-02/transactions.parquet") == landed
    assert not project.fs.exists("Resources/landing/2026-11-03")  # refused before any batch was written
    assert main(["demo", "data", "--project", "fruad", "--rows", "3000", "--days", "1"]) == 3
    assert "unknown project 'fruad'" in capsys.readouterr().err
    assert main(["demo", "data", "--project", "other", "--create", "--rows", "3000", "--days", "1"]) == 0
