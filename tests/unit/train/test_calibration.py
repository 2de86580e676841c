"""Platt calibration of the fraud model's scores: probabilities at the real fraud rate, same ranking."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from jobs.train.model import calibrate, fit_calibration


def test_calibration_brings_overstated_scores_to_the_real_rate() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(-4.5, 1.5, 50_000)
    y = (rng.random(logits.size) < 1 / (1 + np.exp(-logits))).astype("float32")
    # Class weighting trains as if fraud were as common as the rest: scores far above the real risk.
    scores = (1 / (1 + np.exp(-(logits + 3.5)))).astype("float32")
    calibrated = calibrate(scores, fit_calibration(y, scores))
    assert brier_score_loss(y, calibrated) < 0.5 * brier_score_loss(y, scores)
    assert abs(float(calibrated.mean()) - float(y.mean())) < 0.003
    # a monotone map: the same ranking, up to float32 ties
    assert abs(roc_auc_score(y, calibrated) - roc_auc_score(y, scores)) < 1e-6


def test_one_class_only_leaves_the_scores_as_they_are() -> None:
    scores = np.array([0.1, 0.5, 0.9], dtype="float32")
    assert fit_calibration(np.zeros(3, dtype="float32"), scores) == (1.0, 0.0)
    np.testing.assert_allclose(calibrate(scores, (1.0, 0.0)), scores, rtol=1e-5)
