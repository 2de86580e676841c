"""The registry on SQLite and on a real PostgreSQL, including concurrent writers from several processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from featurestore.registry import CommitRecord, GroupRecord, Registry, TrainingDatasetRecord
from fjord.metadata import engine_for


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_db")


def _group(name: str) -> GroupRecord:
    return GroupRecord(
        project="fraud",
        name=name,
        version=1,
        primary_key=["cc_num"],
        event_time="ts",
        online_enabled=False,
        table_uri=f"file:///x/{name}",
        created_at=datetime.now(UTC),
    )


def _worker(url: str, worker: int, rounds: int) -> None:
    registry = Registry(engine_for(url))
    for i in range(rounds):
        group, _ = registry.get_or_create_group(_group(f"shared_{i % 3}"))
        with registry.engine.begin() as conn:
            registry.add_commit(
                conn,
                group.id,
                CommitRecord(
                    commit_id=worker * 1000 + i, committed_at=datetime.now(UTC), rows=1, statistics={}
                ),
            )
        registry.reserve_dataset(
            TrainingDatasetRecord(
                view_id=_view_id(registry),
                version=0,
                data_format="parquet",
                uri="",
                commits={},
                rows=0,
                run_id=f"w{worker}",
                options={},
                created_at=datetime.now(UTC),
            )
        )


def _view_id(registry: Registry) -> int:
    from featurestore.registry import ViewRecord

    view, _ = registry.get_or_create_view(
        ViewRecord(project="fraud", name="v", version=1, query={}, labels=[], created_at=datetime.now(UTC))
    )
    return view.id


def test_get_or_create_is_idempotent(db_url) -> None:
    registry = Registry(engine_for(db_url))
    first, created = registry.get_or_create_group(_group("tx"))
    again, created_again = registry.get_or_create_group(_group("tx"))
    assert created and not created_again and first.id == again.id
    assert [g.name for g in registry.list_groups("fraud")] == ["tx"]


@pytest.mark.slow
def test_concurrent_writers_from_several_processes(db_url) -> None:
    Registry(engine_for(db_url))  # create the tables once, as a first user would
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(db_url, w, 15)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=240)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]  # no "database is locked", no duplicates
    registry = Registry(engine_for(db_url))
    groups = registry.list_groups("fraud")
    assert sorted(g.name for g in groups) == ["shared_0", "shared_1", "shared_2"]
    assert sum(len(registry.commits(g.id)) for g in groups) == 60
    view = registry.get_view("fraud", "v", 1)
    with registry.engine.connect() as conn:
        versions = (
            conn.execute(text("SELECT version FROM fs_training_datasets WHERE view_id = :v"), {"v": view.id})
            .scalars()
            .all()
        )
    assert sorted(versions) == list(range(1, 61))  # every reservation got its own version
