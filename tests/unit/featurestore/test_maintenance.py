"""Compaction and vacuum of feature group tables: fewer files, the same data, and time travel kept
for every commit a training dataset names (real Delta tables, DuckDB, SQLite registry)."""

from __future__ import annotations

import pandas as pd
import pytest

import featurestore
from featurestore import FeatureStorePermissionError
from featurestore.offline import DeltaOfflineStore
from fjord.projects import create_project
from jobs.features.maintenance import MaintenanceSpec
from jobs.features.maintenance import run as run_maintenance

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _day(day: int, scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cc_num": [1, 2, 3],
            "ts": [T0 + pd.Timedelta(days=day, hours=h) for h in (1, 2, 3)],
            "amount": [10.0 * scale, 20.0 * scale, 30.0 * scale],
        }
    )


@pytest.fixture
def fs():
    create_project("fraud")
    return featurestore.connect("fraud")


@pytest.fixture
def grown(fs):
    """A group with six daily commits (one an update of day 0) and a training dataset on commit 2."""
    fg = fs.get_or_create_feature_group("card_amounts", 1, primary_key=["cc_num"], event_time="ts")
    labels = fs.get_or_create_feature_group("labels", 1, primary_key=["cc_num"], event_time="ts")
    for day in range(3):
        fg.insert(_day(day))
    labels.insert(_day(0).assign(is_fraud=[0, 1, 0]).drop(columns="amount"))
    view = fs.get_or_create_feature_view(
        "amounts",
        1,
        query=labels.select_all().join(fg.select(["amount"]), on=["cc_num"]),
        labels=["is_fraud"],
    )
    version, _ = view.create_training_data()
    assert view.training_dataset_commits(version)[fg.ref] == 2
    fg.insert(_day(0, scale=2.0))  # an upsert: rewrites day 0's file, removes the old one
    for day in range(3, 5):
        fg.insert(_day(day))
    return fg, view, version


def _files(fg) -> int:
    return len(fg.snapshot().file_uris)


def test_compaction_keeps_the_data_and_vacuum_keeps_the_named_commit(grown, caplog) -> None:
    fg, view, version = grown
    before = fg.read().sort_values(["cc_num", "ts"]).reset_index(drop=True)
    files_before = _files(fg)
    dataset = view.read_training_dataset(version)

    report = fg.compact(run_id="maintenance-test")
    assert report.compacted_into == 6 and report.files_removed == files_before and report.files_added == 1
    assert _files(fg) == 1
    assert fg.read().sort_values(["cc_num", "ts"]).reset_index(drop=True).equals(before)
    details = fg.commit_details()
    assert details[6]["rows"] == 0 and details[6]["run_id"] == "maintenance-test"

    swept = fg.vacuum(retention_hours=0)
    assert swept.kept_versions == [2, 6] and swept.vacuumed >= 1  # commit 0's day-0 file went
    # the training dataset's commit still time-travels, so the dataset rebuilds bit for bit
    rebuilt, _ = view.recreate_training_data(version)
    assert view.read_training_dataset(rebuilt).equals(dataset)

    head = DeltaOfflineStore(fg.location).latest_version()  # the vacuum logged its start and end
    with caplog.at_level("WARNING"):
        fg.insert(_day(5))  # the next publish builds on the compacted commit; nothing is reverted
    assert "reverting" not in caplog.text
    assert max(fg.commit_details()) == head + 1 and len(fg.read()) == len(before) + 3


def test_nothing_to_compact_adds_no_commit(fs) -> None:
    fg = fs.get_or_create_feature_group("once", 1, primary_key=["cc_num"], event_time="ts")
    fg.insert(_day(0))
    assert fg.compact().compacted_into is None
    assert list(fg.commit_details()) == [0]


def test_maintenance_job_records_its_run_and_refuses_unknown_groups(grown) -> None:
    fg, _, _ = grown
    result = run_maintenance(MaintenanceSpec(project="fraud", retention_hours=0))
    assert result.compacted == {fg.ref: 6} and "labels_1: nothing to compact" in result.summary()
    with pytest.raises(featurestore.FeatureStoreError, match="no writable groups \\['nope'\\]"):
        run_maintenance(MaintenanceSpec(project="fraud", groups="nope"))


def test_a_shared_group_is_not_compacted_by_its_reader(fs, grown) -> None:
    fg, _, _ = grown
    create_project("other")
    fs.share(fg, "other")
    shared = featurestore.connect("other").get_feature_group("card_amounts", 1, project="fraud")
    with pytest.raises(FeatureStorePermissionError):
        shared.compact()
