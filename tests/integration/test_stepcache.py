"""Step caching on real jobs (fjord/stepcache.py): a step reuses an earlier run's result while its
inputs, code, environment and arguments are unchanged, says so in its summary and the lineage, and
runs again when any of them changes, or when asked to (``--no-cache``)."""

from __future__ import annotations

import pyarrow.parquet as pq

import featurestore
from fjord.airflow.hook import FjordJobHook
from fjord.cli.run_cmd import run_step
from fjord.lineage import get_run
from fjord.projects import create_project
from jobs.etl.demo_data import DemoSpec, generate

GROUPS = ("transactions_features", "fraud_labels", "profile_features", "card_features")


def _reused(result: dict) -> str | None:
    return result.get("reused_from")


def _commits() -> dict[str, list[int]]:
    store = featurestore.connect("fraud")
    return {g: sorted(store.get_feature_group(g, 1).commit_details()) for g in GROUPS}


def test_a_step_reuses_an_earlier_result_until_its_data_code_or_arguments_change(spark) -> None:
    project = create_project("fraud")
    first_day, second_day = generate(project.fs, DemoSpec(rows=2_000, days=2, seed=7))

    def etl(batch: str, cache: bool = True) -> dict:
        return run_step(project, "etl", {"project": "fraud", "batch": batch, "validate_data": False}, cache)

    def features(cache: bool = True, **more: str) -> dict:
        return run_step(project, "features", {"project": "fraud", "view": "fraud_demo", **more}, cache)

    etl(first_day)
    second = etl(second_day)
    published = _commits()

    # The first day's run read no history (nothing was published before it): never reused. Its rerun
    # reads the second day's commit, finds its rows published, and adds nothing.
    again = etl(first_day)
    assert _reused(again) is None and "(unchanged)" in again["summary"]
    # The second day's run read the first day's commit and wrote the newest one itself: reused, as
    # is the first day's rerun from now on. Nothing is published.
    reused = etl(second_day)
    assert _reused(reused) == second["run_id"] and reused["summary"].startswith(f"reused {second['run_id']}")
    assert _reused(etl(first_day)) == again["run_id"]
    assert _commits() == published
    record = get_run(reused["run_id"])  # the lineage says what happened: a run that did no work
    assert record.reused_from == second["run_id"] and record.status == "succeeded"
    assert record.inputs == get_run(second["run_id"]).inputs and record.run_id != second["run_id"]

    made = features()
    again = features()
    assert _reused(again) == made["run_id"]
    assert again["training_dataset_version"] == made["training_dataset_version"] == 1
    view = featurestore.connect("fraud").get_feature_view("fraud_demo", 1)
    assert view.get_training_dataset_versions() == [1]  # no second version of the same commits

    forced = features(cache=False)  # --no-cache, or the DAG's `cache` param set to false
    assert _reused(forced) is None and forced["training_dataset_version"] == 2
    # A task in Airflow finds the same result: its rendered arguments are the same arguments.
    task = FjordJobHook().run(
        "features",
        {"project": "fraud", "view": "fraud_demo"},
        run_id="task-features-1",
        parent_run_id="dag-1",
    )
    assert task["reused_from"] == forced["run_id"] and task["training_dataset_version"] == 2
    assert get_run("task-features-1").parent_run_id == "dag-1"

    # A new parameter runs the step.
    windowed = features(start_time=f"{second_day}T00:00:00+00:00")
    assert _reused(windowed) is None and windowed["training_dataset_version"] == 3

    # New data: the second day lands again with one amount changed. Its checksum differs, so its ETL
    # runs and commits; the features read a commit that is newer than the one the last run read.
    path = f"Resources/landing/{second_day}/transactions.parquet"
    table = pq.read_table(project.fs.path(path)).to_pandas()
    table.loc[0, "amount"] += 1.0
    with project.fs.open(path, "wb") as out:
        table.to_parquet(out, index=False)
    changed = etl(second_day)
    assert _reused(changed) is None and "transactions_features commit 2," in changed["summary"]
    assert _commits()["transactions_features"] != published["transactions_features"]
    rebuilt = features()
    assert _reused(rebuilt) is None and rebuilt["training_dataset_version"] == 4
