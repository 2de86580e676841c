"""`make run`'s job, run as a user runs it: the `fjord run` console script on the embedded defaults."""

import pytest

from tests.conftest import run_fjord

pytestmark = pytest.mark.slow


def test_main_job_runs_every_landed_stage_and_reruns_cleanly(fjord_home) -> None:
    first = run_fjord("run")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for text in (
        "Spark 4.1",
        "demo_entity_features_1 commit 0 (2000 rows)",
        "training dataset v1",
        "online entity 3: {'value_mean_5'",
        "raw batch file://",
    ):
        assert text in out, text
    assert "<- demo_etl" in out  # the training data leads back through the ETL run
    second = run_fjord("run")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "demo_entity_features_1 commit 1 (2000 rows)" in second.stdout  # an upsert, not duplicates
    listing = run_fjord("featurestore", "list", "fraud")
    assert "demo_entity_features" in listing.stdout and "1, 2" in listing.stdout  # two training datasets
