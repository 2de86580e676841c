"""The offline store's commits: files committed in place, copy-on-write upserts, statistics for pruning."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import featurestore
from featurestore.offline import DeltaOfflineStore
from fjord.fs import SharedFS
from fjord.projects import create_project

DAY1 = pd.Timestamp("2024-01-01", tz="UTC")
DAY2 = DAY1 + pd.Timedelta(days=1)


def day(start: pd.Timestamp, cards: range, amount: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cc_num": list(cards),
            "ts": [start + pd.Timedelta(minutes=c) for c in cards],
            "amount": [amount] * len(cards),
        }
    )


@pytest.fixture
def fg():
    create_project("fraud")
    group = featurestore.connect("fraud").get_or_create_feature_group(
        "tx", 1, primary_key=["cc_num"], event_time="ts"
    )
    group.insert(day(DAY1, range(0, 100), 1.0))
    group.insert(day(DAY2, range(0, 100), 2.0))
    return group


def files(group) -> set[str]:
    return {u.rsplit("/", 2)[-2] + "/" + u.rsplit("/", 1)[-1] for u in group.snapshot().file_uris}


def test_each_insert_adds_its_own_files_with_statistics(fg) -> None:
    assert len(files(fg)) == 2 and len({f.split("/")[0] for f in files(fg)}) == 2
    actions = pa.table(DeltaTable(fg.location).get_add_actions(flatten=True)).to_pylist()
    assert sorted(a["num_records"] for a in actions) == [100, 100]
    assert sorted(a["min.ts"] for a in actions) == [DAY1, DAY2]  # event-time ranges, for pruning
    assert sorted(a["max.cc_num"] for a in actions) == [99, 99]


def test_an_upsert_rewrites_only_the_files_holding_its_keys(fg) -> None:
    before = files(fg)
    day2_file = next(f for f in before if _rows_in(fg, f, DAY2))
    commit = fg.insert(day(DAY2, range(90, 110), 3.0))  # 10 rows replace day 2's, 10 are new
    after = files(fg)
    assert (before - after) == {day2_file}  # day 1's file is untouched (and was not even read)
    assert len(after) == 3  # day 1, day 2 rewritten without cards 90-99, the new insert
    frame = fg.read()
    assert len(frame) == 210
    assert frame[frame.ts >= DAY2].groupby("amount").size().to_dict() == {2.0: 90, 3.0: 20}
    details = fg.commit_details()[commit]
    assert details["rows_updated"] == 10 and details["rows_inserted"] == 10


def test_rerunning_an_insert_adds_no_commit(fg) -> None:
    before = fg.read().sort_values(["ts", "cc_num"], ignore_index=True)
    commits, latest = list(fg.commit_details()), fg.snapshot().version
    assert fg.insert(day(DAY2, range(0, 100), 2.0)) == latest  # the same rows: nothing to commit
    assert list(fg.commit_details()) == commits
    assert DeltaOfflineStore(fg.location).latest_version() == latest  # not even a Delta commit
    pd.testing.assert_frame_equal(before, fg.read().sort_values(["ts", "cc_num"], ignore_index=True))


def test_an_insert_that_changes_one_value_replaces_its_rows(fg) -> None:
    rows = day(DAY2, range(0, 100), 2.0)
    rows.loc[5, "amount"] = 2.5
    commit = fg.insert(rows)
    assert fg.commit_details()[commit]["rows_updated"] == 100
    assert len(files(fg)) == 2  # the old day-2 file fully replaced: removed, not rewritten
    assert sorted(fg.read().amount.unique().tolist()) == [1.0, 2.0, 2.5]


def test_a_failed_insert_leaves_no_files_behind(fg) -> None:
    on_disk = SharedFS(fg.location).find(suffix=".parquet")
    bad = pd.concat([day(DAY2, range(5), 1.0)] * 2)
    with pytest.raises(featurestore.SchemaError, match="duplicate"):
        fg.insert(bad)
    assert SharedFS(fg.location).find(suffix=".parquet") == on_disk


def _rows_in(group, rel: str, start: pd.Timestamp) -> bool:
    path = f"{group.location.removeprefix('file://')}/{rel}"
    return bool((pd.read_parquet(path).ts >= start).all())
