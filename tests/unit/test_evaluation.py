"""Performance from a score histogram: CBPE's estimate against its per-row definition and against
realized labels drawn from calibrated scores; realized metrics against scikit-learn's."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from fjord.evaluation import calibration_check, estimate, expected_auc, histogram, realized


def _calibrated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.5, 8, n)
    return scores, (rng.random(n) < scores).astype("int64")


def test_the_histogram_estimate_equals_the_per_row_expectation_within_a_thousandth():
    scores, _ = _calibrated(20_000)
    order = np.sort(scores)
    below = np.cumsum(1 - order) - (1 - order)
    per_row = float((order * below).sum() + 0.5 * (order * (1 - order)).sum()) / (
        order.sum() * (1 - order).sum()
    )
    _, rows, sums = histogram(scores)
    assert abs(expected_auc(rows, sums) - per_row) < 1e-3
    threshold = 0.3
    found = estimate(rows, sums, threshold)
    above = scores >= threshold
    assert found["precision"] == pytest.approx(scores[above].mean(), abs=2e-3)
    assert found["recall"] == pytest.approx(scores[above].sum() / scores.sum(), abs=2e-3)
    assert found["rows"] == 20_000


def test_on_calibrated_scores_the_estimate_lands_near_what_the_labels_then_say():
    scores, y = _calibrated(50_000, seed=3)
    _, rows, sums = histogram(scores)
    guess, truth = estimate(rows, sums, 0.3), realized(y, scores, 0.3)
    for metric in ("roc_auc", "precision", "recall"):
        assert guess[metric] == pytest.approx(truth[metric], abs=0.02), metric


def test_realized_metrics_are_scikit_learns():
    scores, y = _calibrated(5_000, seed=7)
    found = realized(y, scores, 0.25)
    assert found["roc_auc"] == roc_auc_score(y, scores)
    assert found["pr_auc"] == average_precision_score(y, scores)
    assert found["brier"] == brier_score_loss(y, scores)
    predicted = scores >= 0.25
    assert found["precision"] == (predicted & (y == 1)).sum() / predicted.sum()
    assert found["recall"] == (predicted & (y == 1)).sum() / y.sum()
    assert sum(b["rows"] for b in found["calibration"]) == 5_000 and found["rows"] == 5_000


def test_one_class_or_no_rows_give_no_auc_instead_of_an_error():
    assert math.isnan(realized(np.zeros(5), np.linspace(0, 1, 5), 0.5)["roc_auc"])
    assert realized(np.array([]), np.array([]), 0.5) == {"rows": 0, "positives": 0}
    assert estimate(np.array([]), np.array([]), 0.5) == {"rows": 0}
    assert math.isnan(expected_auc(np.array([4.0]), np.array([4.0])))  # all surely positive


def test_calibration_is_judged_by_its_expected_error():
    scores, y = _calibrated(20_000, seed=11)
    assert calibration_check(y, scores)["calibrated"]
    overconfident = calibration_check(y, np.clip(scores * 3, 0, 1))
    assert not overconfident["calibrated"] and overconfident["ece"] > 0.05


def test_the_estimate_agrees_with_nannymls_cbpe_on_the_same_chunks():
    """NannyML 0.13.1's CBPE estimates, computed by ``python -m bench.performance_estimation`` in its own
    venv and kept in tests/data: Fjord's histogram estimate of each chunk is within 0.01 of each."""
    from bench.performance_estimation import GOLDEN, METRICS, scores_and_labels

    golden = json.loads(GOLDEN.read_text())
    _, analysis = scores_and_labels(golden["chunks"], golden["chunk"], golden["seed"])
    scores = analysis["y_pred_proba"].to_numpy()
    for i, theirs in enumerate(golden["estimates"]):
        _, rows, sums = histogram(scores[i * golden["chunk"] : (i + 1) * golden["chunk"]])
        ours = estimate(rows, sums, golden["threshold"])
        for metric in METRICS:
            assert abs(ours[metric] - theirs[metric]) < 0.01, (i, metric, ours[metric], theirs[metric])
