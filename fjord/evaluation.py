"""Model performance from a score histogram: estimated without labels (CBPE), realized with them.

CBPE (NannyML's method) reads a calibrated score as the probability that the row is positive. The
expected confusion matrix at the serving threshold ``t`` is then::

    TP = sum(p  for p >= t)    FP = sum(1 - p  for p >= t)
    FN = sum(p  for p <  t)    TN = sum(1 - p  for p <  t)

and precision, recall, F1 and accuracy follow from it. The expected ROC AUC is the area under the
curve of expected true and false positive rates over every threshold: the chance that a positive
(weighted by p) outranks a negative (weighted by 1 - p), ties counting half.

Both work on a histogram of the scores: per bin of width ``1 / SCORE_BINS``, the rows and the sum of
their scores, which the monitor's stream keeps per window as counters (``score`` metric) and which
adds up across partitions and micro-batches exactly. A bin's rows count as tied at its mean score;
at 1,000 bins that moves the estimate by less than 0.001 AUC from the per-row figure (measured
against NannyML, docs/monitoring.md).

CBPE assumes calibrated scores. The training job checks the calibration of each registered version
on its validation split (``fjord-model.json``: ``calibration``); a version whose expected calibration
error is above :data:`CALIBRATION_TOLERANCE` is estimated all the same, and its estimates are
flagged ``calibrated: false``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SCORE_BINS = 1000
CALIBRATION_TOLERANCE = 0.05  # expected calibration error, 10 bins, on the validation split
CALIBRATION_BINS = 10


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The histogram bin of each score in [0, 1] (a score outside is clipped to the edge)."""
    return np.clip(np.floor(scores * SCORE_BINS), 0, SCORE_BINS - 1).astype("int64")


def histogram(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bins, rows per bin, sum of scores per bin) of the finite scores, bins ascending."""
    scores = scores[np.isfinite(scores)]
    bins = score_bins(scores)
    found, inverse = np.unique(bins, return_inverse=True)
    return found, np.bincount(inverse).astype("float64"), np.bincount(inverse, weights=scores)


def estimate(rows: np.ndarray, sums: np.ndarray, threshold: float) -> dict[str, Any]:
    """CBPE's expected metrics from a score histogram (``rows`` and ``sums`` per bin); a bin counts on
    the side of the threshold its mean score is on, as its rows are tied."""
    rows, sums = np.asarray(rows, dtype="float64"), np.asarray(sums, dtype="float64")
    n = float(rows.sum())
    if n == 0:
        return {"rows": 0}
    means = np.divide(sums, rows, out=np.zeros_like(sums), where=rows > 0)
    predicted = means >= threshold
    tp, fn = float(sums[predicted].sum()), float(sums[~predicted].sum())
    fp, tn = float((rows - sums)[predicted].sum()), float((rows - sums)[~predicted].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else math.nan
    recall = tp / (tp + fn) if tp + fn > 0 else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    return {
        "rows": int(n),
        "roc_auc": expected_auc(rows, sums, means),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / n,
        "positive_rate": float(rows[predicted].sum()) / n,
        "expected_positives": tp + fn,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def expected_auc(rows: np.ndarray, sums: np.ndarray, means: np.ndarray | None = None) -> float:
    """The expected ROC AUC of a score histogram: P(positive outranks negative), ties half."""
    if means is None:
        means = np.divide(sums, rows, out=np.zeros_like(sums), where=rows > 0)
    order = np.argsort(means, kind="stable")
    positives, negatives = sums[order], (rows - sums)[order]
    total_p, total_n = float(positives.sum()), float(negatives.sum())
    if total_p <= 0 or total_n <= 0:
        return math.nan
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    pairs = float((positives * below).sum() + 0.5 * (positives * negatives).sum())
    return pairs / (total_p * total_n)


def realized(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """The realized metrics of labelled rows: ROC AUC, PR AUC (average precision), precision and
    recall at ``threshold``, Brier score, calibration bins (10: rows, mean score, fraud rate)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y, scores = np.asarray(y, dtype="int64"), np.asarray(scores, dtype="float64")
    n, positives = len(y), int(y.sum())
    if n == 0:
        return {"rows": 0, "positives": 0}
    both = 0 < positives < n
    predicted = scores >= threshold
    tp = int((predicted & (y == 1)).sum())
    return {
        "rows": n,
        "positives": positives,
        "roc_auc": float(roc_auc_score(y, scores)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, scores)) if positives else math.nan,
        "precision": tp / int(predicted.sum()) if predicted.any() else math.nan,
        "recall": tp / positives if positives else math.nan,
        "brier": float(brier_score_loss(y, scores, labels=[0, 1])),
        "calibration": calibration_bins(y, scores),
    }


def calibration_bins(y: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    """Per tenth of the score range that holds rows: its rows, mean score and observed positive rate."""
    bins = np.minimum((np.clip(scores, 0, 1) * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    out = []
    for b in range(CALIBRATION_BINS):
        inside = bins == b
        if inside.any():
            out.append(
                {"bin": b, "rows": int(inside.sum()), "mean_score": float(scores[inside].mean()),
                 "positive_rate": float(y[inside].mean())}
            )  # fmt: skip
    return out


def calibration_error(y: np.ndarray, scores: np.ndarray) -> float:
    """Expected calibration error over 10 equal-width bins (the rows-weighted |mean score - rate|)."""
    n = len(y)
    bins = calibration_bins(y, scores)
    return float(sum(b["rows"] / n * abs(b["mean_score"] - b["positive_rate"]) for b in bins))


def calibration_check(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """What a version's card records about its calibration (on the validation split)."""
    y, scores = np.asarray(y, dtype="int64"), np.asarray(scores, dtype="float64")
    ece = calibration_error(y, scores)
    return {
        "split": "validation",
        "rows": len(y),
        "ece": ece,
        "tolerance": CALIBRATION_TOLERANCE,
        "calibrated": bool(ece <= CALIBRATION_TOLERANCE),
        "bins": calibration_bins(y, scores),
    }
