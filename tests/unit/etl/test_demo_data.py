from datetime import date

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fjord.cli.main import main
from fjord.projects import create_project
from jobs.etl.demo_data import TRANSACTION_SCHEMA, DemoSpec, generate


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
    generate(project.fs, DemoSpec(rows=40_000, days=1, seed=3))
    tx = pq.read_table(project.fs.path("Resources/landing/2026-11-01/transactions.parquet")).to_pandas()
    y = (
        pq.read_table(project.fs.path("Resources/landing/2026-11-01/labels.parquet"))
        .column("is_fraud")
        .to_numpy()
    )
    tx = tx.sort_values(["cc_num", "ts"])
    gap = tx.groupby("cc_num").ts.diff().dt.total_seconds().fillna(1e6).sort_index().to_numpy()
    hour = tx.sort_index().ts.dt.hour.to_numpy()
    risky = tx.sort_index().category.isin(["electronics", "jewelry", "gift_card"]).to_numpy()
    score = (gap < 1800) * 2 + risky * (hour < 5) * 2 + risky
    assert roc_auc_score(y, score) > roc_auc_score(y, tx.sort_index().amount.to_numpy()) + 0.2


def test_csv_landing_and_the_cli(project, capsys) -> None:
    assert (
        main(["demo", "data", "--project", "fraud", "--rows", "3000", "--days", "2", "--format", "csv"]) == 0
    )
    assert "landed 2 batches" in capsys.readouterr().out
    table = pacsv.read_csv(project.fs.path("Resources/landing/2026-11-02/transactions.csv"))
    assert table.num_rows > 1000 and "amount" in table.column_names
    assert main(["demo", "data", "--rows", "1", "--days", "3"]) == 1
    assert "need at least one row per day" in capsys.readouterr().err
    assert main(["demo", "data", "--format", "xml"]) == 1
