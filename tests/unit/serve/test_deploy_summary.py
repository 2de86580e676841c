"""The gate's report reads whatever the AUCs are: a version whose AUC cannot be measured (it reads
features the held-out rows lack) is named so, not a crash after a finished deploy (Airflow would retry
a deploy that had happened)."""

from __future__ import annotations

import pytest

from jobs.serve.deploy import DeployResult, auc_text


def _result(candidate, champion, champion_version, decision="forced", deployed=True) -> DeployResult:
    blessing = {"candidate": candidate, "champion": champion, "champion_version": champion_version,
                "tolerance": 0.005, "decision": decision}  # fmt: skip
    return DeployResult("deploy-1", "fraud", "fraud", 3, "stable", 2, blessing, "http://h", "t", deployed)


@pytest.mark.parametrize(
    ("candidate", "champion", "champion_version", "says"),
    [
        (0.91, 0.9, 2, "candidate ROC AUC 0.9100 vs champion v2 0.9000"),
        (None, 0.9, 2, "candidate ROC AUC not measurable (the version reads other features) vs champion v2"),
        (0.91, None, 2, "vs champion v2 not measurable"),
        (0.91, None, None, "no champion yet"),
    ],
)
def test_the_summary_names_every_figure(candidate, champion, champion_version, says) -> None:
    assert says in _result(candidate, champion, champion_version).summary()
    assert says in _result(candidate, champion, champion_version, deployed=False).summary()


def test_auc_text() -> None:
    assert auc_text(0.5) == "0.5000" and auc_text(None).startswith("not measurable")


def test_the_summary_names_the_replays_decision() -> None:
    result = _result(0.91, 0.9, 2)
    result.blessing["replay"] = {"decision": "passed", "rows": 1234, "agreement": 0.987}
    assert "replayed on 1,234 served rows: passed, 98.7% of decisions agree" in result.summary()
    result.blessing["replay"] = {"decision": "no traffic", "reasons": ["no archived traffic"], "run_id": None}
    assert "replay: no traffic" in result.summary() and "replay: no traffic" in _bless_only(result).summary()


def _bless_only(result: DeployResult) -> DeployResult:
    result.deployed = False
    return result
