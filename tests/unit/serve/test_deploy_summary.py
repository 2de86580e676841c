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
