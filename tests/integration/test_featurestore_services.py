"""The feature store end to end with its metadata on PostgreSQL (registry and lineage) and Redis online."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

import featurestore
from fjord.config import reset_settings
from fjord.lineage import lineage_graph
from fjord.projects import create_project

T0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture
def postgres_and_redis(monkeypatch, postgres_db: str, redis_server: str) -> str:
    monkeypatch.setenv("FJORD_METADATA__URL", postgres_db)
    monkeypatch.setenv("FJORD_FEATURESTORE__ONLINE_STORE", "redis")
    monkeypatch.setenv("FJORD_REDIS__URL", redis_server)
    reset_settings()
    return postgres_db


def test_api_end_to_end_on_postgresql_and_redis(postgres_and_redis) -> None:
    create_project("fraud")
    fs = featurestore.connect("fraud")
    tx = fs.get_or_create_feature_group("tx", 1, primary_key=["cc_num"], event_time="ts", online_enabled=True)
    labels = fs.get_or_create_feature_group("labels", 1, primary_key=["cc_num"], event_time="ts")
    tx.insert(pd.DataFrame({"cc_num": [1, 2], "ts": [T0, T0], "amount": [3.0, 4.0]}))
    labels.insert(pd.DataFrame({"cc_num": [1, 2], "ts": [T0, T0 - pd.Timedelta("1h")], "is_fraud": [1, 0]}))
    view = fs.get_or_create_feature_view(
        "fraud", 1, query=labels.select_all().join(tx.select(["amount"]), on=["cc_num"]), labels=["is_fraud"]
    )
    version, job = view.create_training_data()
    X, y = view.get_training_data(version)
    assert y.is_fraud.tolist() == [0, 1]
    assert X.amount.tolist()[1] == 3.0 and pd.isna(X.amount.tolist()[0])  # label of key 2 predates its row
    assert view.get_feature_vector({"cc_num": 2}) == [4.0]  # from Redis
    assert lineage_graph(job.outputs[0].uri, str(version)).run.run_id == job.run_id  # lineage on PostgreSQL
    with create_engine(postgres_and_redis).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fs_feature_groups")).scalar() == 2
    fs.online.drop(tx.online_table)
