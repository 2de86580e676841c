"""Replay: a candidate scored on the archived requests a served version answered, through the model
server's backend, against the served outputs and the labels that landed; bad input is one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import featurestore
from fjord.lineage import get_run
from fjord.projects import create_project
from jobs.serve.deploy import DeploySpec, replay_verdict
from jobs.serve.replay import ReplayError, ReplaySpec, run
from tests.conftest import run_fjord
from tests.integration.monitor_setup import archive_calls
from tests.serving_models import write_version

pytestmark = pytest.mark.slow
NOW = datetime.now(UTC)


def _publish_version(project, local: Path, version: int, threshold: float) -> None:
    """A version as the training job leaves it: its files and its card (the serving threshold)."""
    with project.fs.publish(f"Models/fraud/{version}") as out:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            out.upload(str(path), path.relative_to(local).as_posix())
        out.write_text("fjord-model.json", json.dumps({"metrics": {"threshold": threshold}}))


def _worse_version(base: Path, version: int) -> Path:
    """``sum = y - x``: it ranks the rows against what the labels follow."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.float32, "x"), tf.TensorSpec([None], tf.float32, "y")]
        )
        def serve(self, x, y):
            return {"sum": y - x, "diff": x - y}

    model = Model()
    tf.saved_model.save(model, str(base / str(version)), signatures={"serving_default": model.serve})
    return base / str(version)


@pytest.fixture
def replayed(tmp_path):
    project = create_project("fraud")
    rng = np.random.default_rng(11)
    x, y = rng.uniform(0, 0.5, 400), rng.uniform(0, 0.5, 400)
    tids = np.arange(5_000, 5_400)
    labels = (rng.random(400) < x + y).astype("int64")  # fraud follows x + y
    _publish_version(project, write_version(tmp_path / "m", 1), 1, threshold=0.5)
    _publish_version(project, write_version(tmp_path / "m", 2, scale=2.0), 2, threshold=0.5)
    _publish_version(project, _worse_version(tmp_path / "m", 3), 3, threshold=0.0)
    served = (x.astype("float32") + y.astype("float32")).astype("float64")  # v1: sum = x + y
    archive_calls(project, "fraud", {"x": x, "y": y}, {"sum": served, "diff": x - y}, tids,
                  at_ms=int(NOW.timestamp() * 1000) - 60_000)  # fmt: skip
    featurestore.connect("fraud").get_or_create_feature_group(
        "fraud_labels", 1, primary_key=["tid"], event_time="ts"
    ).insert(pd.DataFrame({"tid": tids[:300], "ts": [pd.Timestamp(NOW)] * 300, "is_fraud": labels[:300]}))
    return project, x, y, labels


def _spec(candidate: int, **overrides) -> ReplaySpec:
    return ReplaySpec(project="fraud", serving="fraud", candidate=candidate, output="sum", bootstrap=300,
                      **overrides)  # fmt: skip


def test_agreement_flips_and_paired_auc_are_those_computed_independently(replayed):
    project, x, y, labels = replayed
    result = run(_spec(2))
    served = x.astype("float32") + y.astype("float32")
    candidate = 2.0 * served  # float32, as the SavedModel computes it
    flips = np.flatnonzero((served >= 0.5) != (candidate >= 0.5))  # 0.25 <= x + y < 0.5
    assert (result.rows, result.calls, result.served_versions) == (400, 100, [1])
    assert result.flips == len(flips) > 0 and result.agreement == pytest.approx(1 - len(flips) / 400)
    assert {(f["row"], f["tid"]) for f in result.flipped} <= {(int(i % 4), int(5_000 + i)) for i in flips}
    assert len(result.flipped) == min(20, len(flips)) and len(result.flipped[0]["inference_id"]) == 32
    assert result.psi > 0.5  # twice the scores: most land in the top decile of the served ones
    assert 0 < result.latency_p50_ms <= result.latency_p99_ms
    # the same ranking: the same ROC AUC on the 300 labelled rows, the difference exactly 0
    assert result.labelled == 300 and result.auc_served == pytest.approx(result.auc_candidate)
    assert result.auc_difference == pytest.approx(0.0) and result.auc_difference_ci == pytest.approx([0, 0])
    from sklearn.metrics import roc_auc_score

    assert result.auc_served == pytest.approx(roc_auc_score(labels[:300], served[:300]), abs=1e-9)

    record = get_run(result.run_id)
    assert {(a.kind, a.version) for a in record.inputs} == {
        ("inference_archive", "0"), ("model", "2"), ("model", "1"),
    }  # fmt: skip
    kept = json.loads(project.fs.read_text(result.uri.split("/Projects/fraud/")[1]))
    assert kept["flips"] == result.flips and kept["candidate"] == 2 and kept["uri"] == result.uri

    worse = run(_spec(3))  # ranks against the labels: worse, and the interval says so
    assert worse.auc_difference < -0.2 and worse.auc_difference_ci[1] < 0
    assert worse.candidate_threshold == 0.0

    # The gate's rules on these replays (jobs/serve/deploy.py runs them before it deploys)
    gate = DeploySpec(project="fraud", replay_hours=24)
    decision, why = replay_verdict(worse, gate)
    assert decision == "refused" and "labelled rows is below the served" in why[0]
    assert replay_verdict(result, gate) == ("passed", [])  # as good on the labels
    backed = DeploySpec(project="fraud", replay_hours=24, replay_max_flips=0.01)
    assert replay_verdict(result, backed) == ("passed", [])  # flips the labels back (no worse)
    unbacked = backed.model_copy(update={"replay_min_labelled": 1_000})  # too few labels to count
    decision, why = replay_verdict(result, unbacked)
    assert decision == "refused" and f"{1 - result.agreement:.1%} of 400 decisions flipped" in why[0]
    slow = DeploySpec(project="fraud", replay_hours=24, replay_max_p99_ms=1e-6)
    assert "p99 latency" in replay_verdict(result, slow)[1][0]


def test_bad_input_is_one_line_and_replays_nothing(replayed, tmp_path):
    project, x, y, _ = replayed
    import tensorflow as tf

    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, "z")])
        def serve(self, z):
            return {"sum": z}

    other = Other()
    tf.saved_model.save(other, str(tmp_path / "o" / "4"), signatures={"serving_default": other.serve})
    _publish_version(project, tmp_path / "o" / "4", 4, threshold=0.5)
    with pytest.raises(ReplayError, match="reads z, which the archived requests of fraud do not hold"):
        run(_spec(4))
    assert not project.fs.exists("Resources/replay/fraud") or not project.fs.listdir("Resources/replay/fraud")

    cases = [
        (["--candidate", "9"], 3, "no version 9"),
        (["--candidate", "2", "--since", "5x"], 2, "--since '5x'"),
        (["--candidate", "2", "--from", "2020-01-02", "--to", "2020-01-01"], 2, "before end_time"),
        (["--candidate", "2", "--from", "2020-01-01", "--to", "2020-01-02"], 3, "no archived traffic"),
    ]
    for args, code, text in cases:
        answer = run_fjord("model", "shadow", "fraud", "-p", "fraud", *args)
        assert answer.returncode == code and text in answer.stderr, (args, answer.stderr)
        assert answer.stderr.count("\n") == 1, answer.stderr
    shown = run_fjord("model", "shadow", "fraud", "-p", "fraud", "--candidate", "2")  # the served output
    served = x.astype("float32") + y.astype("float32")
    agree = np.mean((served >= 0.5) == (2 * served >= 0.5))
    assert shown.returncode == 0 and f"decisions agree on {agree:.2%}" in shown.stdout, shown.stdout
    assert "flip " in shown.stdout
