"""A metadata database that does not know a table never destroys it: a new database (a new SQLite file,
PostgreSQL pointed at the old root), a restored older copy of one, or a crash inside a publish before
the switch. The tables keep every commit; a publish says how to adopt them; adoption rebuilds the
groups and commits from the tables and reverts only a publish that never finished."""

from __future__ import annotations

import json

import pytest

import featurestore
from featurestore.errors import UnknownCommitsError
from featurestore.offline import DeltaOfflineStore
from fjord.config import reset_settings
from fjord.faults import CRASH_EXIT_CODE
from fjord.lineage import producer_of
from fjord.projects import create_project
from tests.conftest import run_fjord
from tests.integration.publish_worker import GROUPS, groups, rows
from tests.integration.publish_worker import main as publish_day
from tests.integration.test_publish import _run

pytestmark = pytest.mark.slow


def _tables(home) -> dict[str, DeltaOfflineStore]:
    root = home / "fs" / "Projects" / "fraud" / "FeatureStore"
    return {name: DeltaOfflineStore((root / f"{name}_1").as_uri()) for name in GROUPS}


def _new_database(monkeypatch, path) -> None:
    monkeypatch.setenv("FJORD_METADATA__URL", f"sqlite:///{path}")
    reset_settings()


@pytest.fixture
def two_days(fjord_home):
    create_project("fraud")
    publish_day("three", 0)
    publish_day("three", 1)
    return fjord_home


def _view(store: featurestore.FeatureStore) -> featurestore.FeatureView:
    found = groups(store)
    query = (
        found["labels"].select(["amount"]).join(found["tx"].select(["amount"]), on=["cc_num"], prefix="tx_")
    )
    return store.get_or_create_feature_view("days", 1, query=query, labels=["amount"])


def test_a_new_database_refuses_the_table_then_adopts_every_commit(two_days, monkeypatch, tmp_path) -> None:
    assert _view(featurestore.connect("fraud")).create_training_data()[0] == 1
    dataset = two_days / "fs" / "Projects" / "fraud" / "TrainingDatasets" / "days_1" / "1"
    published = (dataset / "_SUCCESS").read_text()
    before = {name: len(t.read()) for name, t in _tables(two_days).items()}
    _new_database(monkeypatch, tmp_path / "new.db")  # projects live on the filesystem: "fraud" is there

    with pytest.raises(UnknownCommitsError) as refused:
        groups(featurestore.connect("fraud"))
    assert "holds 2 Delta commit(s)" in refused.value.one_line()
    assert "hint: adopt them with `fjord featurestore adopt fraud`" in refused.value.one_line()
    assert (
        {name: len(t.read()) for name, t in _tables(two_days).items()} == before == dict.fromkeys(GROUPS, 100)
    )

    adopted = run_fjord("featurestore", "adopt", "fraud")
    assert adopted.returncode == 0, adopted.stderr
    assert "fraud.tx_1 (new group): commits [0, 1]" in adopted.stdout
    store = featurestore.connect("fraud")
    found = groups(store)  # now known, with the key and event time they were created with
    for name, group in found.items():
        assert sorted(group.commit_details()) == [0, 1] and len(group.read()) == 100
        assert group.online_enabled == GROUPS[name]
        assert group.get_statistics()["commit_id"] == 1 and group.get_statistics()["rows"] == 50
    assert found["tx"].online_store.read([(found["tx"].online_table, "[7]")])[0] is not None
    producer = producer_of(found["tx"].location, "1")  # the lineage came back from the run files
    assert (
        producer is not None and producer.stage == "featurestore.publish" and producer.status == "succeeded"
    )
    found["tx"].insert(rows(2))
    assert sorted(found["tx"].commit_details()) == [0, 1, 2] and len(found["tx"].read()) == 150
    # The view is new to this database, its training dataset 1 is not: the next one is 2, and 1 stays.
    assert _view(store).create_training_data()[0] == 2
    assert (dataset / "_SUCCESS").read_text() == published
    again = run_fjord("featurestore", "adopt", "fraud")
    assert again.returncode == 0 and "nothing to adopt" in again.stdout, again.stderr


def test_a_restored_older_database_keeps_the_later_commits(two_days, monkeypatch, tmp_path) -> None:
    """fjord.db restored from before day 1: the publish of day 2 refuses (exit 17, one line) instead of
    reverting day 1; adoption registers day 1, and day 2 then publishes."""
    import sqlite3

    old = tmp_path / "old.db"
    source, conn = sqlite3.connect(two_days / "fjord.db"), sqlite3.connect(old)
    source.backup(conn)  # a copy with both days (its WAL included): take day 1 out of it
    with conn:
        conn.execute("DELETE FROM fs_commits WHERE commit_id = 1")
    source.close(), conn.close()
    _new_database(monkeypatch, old)
    tx = groups(featurestore.connect("fraud"))["tx"]
    with pytest.raises(UnknownCommitsError) as refused:
        tx.insert(rows(2))
    assert refused.value.exit_code == 17
    assert refused.value.one_line().startswith("fraud.tx_1: its table holds Delta commit(s) [1] that this")
    assert len(_tables(two_days)["tx"].read()) == 100 and sorted(tx.commit_details()) == [0]

    adopted = run_fjord("featurestore", "adopt", "fraud", "--json")
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads(adopted.stdout)["commits"] == {
        f"fraud.{n}_1": [1] for n in ("labels", "profiles", "tx")
    }
    tx.insert(rows(2))
    assert sorted(tx.commit_details()) == [0, 1, 2] and len(_tables(two_days)["tx"].read()) == 150


def test_adoption_reverts_a_publish_that_died_half_way(two_days, monkeypatch, tmp_path) -> None:
    """A three-group publish killed after two of its Delta commits, then the database is lost: the
    new database adopts days 0 and 1 and reverts the half publish in the two tables that hold it."""
    crashed = _run("three", 2, crash="publish.delta_committed#2")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    _new_database(monkeypatch, tmp_path / "new.db")
    result = featurestore.connect("fraud").adopt()
    assert result.commits == {f"fraud.{n}_1": [0, 1] for n in ("labels", "profiles", "tx")}
    assert sorted(result.reverted) == ["fraud.labels_1", "fraud.tx_1"]
    assert {name: len(t.read()) for name, t in _tables(two_days).items()} == dict.fromkeys(GROUPS, 100)
    assert _run("three", 2).returncode == 0  # and the publish goes through in full
    assert {name: len(t.read()) for name, t in _tables(two_days).items()} == dict.fromkeys(GROUPS, 150)


def test_metadata_moves_to_postgresql_whole(two_days, monkeypatch, postgres_db) -> None:
    """`fjord metadata migrate --to postgresql://...` on a home with groups, commits, a training
    dataset and the lineage: after pointing metadata.url at it, all of it reads the same, and new
    groups, commits and datasets follow on (PostgreSQL's id sequences moved past the copied ids)."""
    from fjord.lineage import lineage_graph, raw_sources, track_run

    store = featurestore.connect("fraud")
    version, _ = _view(store).create_training_data()
    dataset_uri = store.get_feature_view("days", 1).training_dataset_uri(version)
    with track_run(store.project, "train", params={"model": "fraud"}) as train:
        train.add_input(dataset_uri, str(version), kind="training_dataset")
        train.add_output(store.project.fs.uri("Models/fraud/1"), "1", kind="model")
    before = {n: (sorted(g.commit_details()), len(g.read())) for n, g in groups(store).items()}

    for bad, code, says in (
        ("not-a-url", 2, "is not a database URL"),
        ("postgresql://u:secretpw@127.0.0.1:1/x", 18, "cannot reach postgresql://u:***@"),
    ):
        refused = run_fjord("metadata", "migrate", "--to", bad)
        assert refused.returncode == code and says in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and "secretpw" not in refused.stderr  # fmt: skip
    moved = run_fjord("metadata", "migrate", "--to", postgres_db, "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["rows"]["fs_commits"] == 6
    again = run_fjord("metadata", "migrate", "--to", postgres_db)
    assert again.returncode == 4 and "already holds Fjord metadata" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr and "secret" not in again.stderr

    monkeypatch.setenv("FJORD_METADATA__URL", postgres_db)
    reset_settings()
    store = featurestore.connect("fraud")
    assert {n: (sorted(g.commit_details()), len(g.read())) for n, g in groups(store).items()} == before
    view = store.get_feature_view("days", 1)
    assert view.get_training_dataset_versions() == [1] and len(view.read_training_dataset(1)) == 100
    graph = lineage_graph(store.project.fs.uri("Models/fraud/1"), "1")
    assert {n.artifact.kind for n in graph.inputs} == {"training_dataset"}
    assert raw_sources(graph) == [] and train.run_id == graph.run.run_id
    groups(store)["tx"].insert(rows(2))
    extra = store.get_or_create_feature_group("extra", 1, primary_key=["cc_num"], event_time="ts")
    extra.insert(rows(0))  # a new group: a new id, past the copied ones
    assert view.create_training_data()[0] == 2
