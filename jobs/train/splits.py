"""How the training job splits a training dataset (no TensorFlow here: the job checks the splits
before it loads TensorFlow or submits a trial).

Time-ordered: the last ``test_size`` of the rows is held out for the final evaluation, and the last
``val_size`` of the rest is the search's validation set. Each split needs both classes: a validation
set without a fraud row makes every trial's validation AUC undefined.
"""

from __future__ import annotations

from typing import Any

MIN_PER_CLASS = 1  # rows of each class every split needs


def validation_cut(rows: int, val_size: float) -> int:
    """Where the validation rows start among the ``rows`` that are not held out."""
    return round(rows * (1 - val_size))


def class_counts(y_rest: Any, y_test: Any, val_size: float) -> dict[str, tuple[int, int]]:
    """(negatives, positives) per split, from the label arrays of the time-ordered split."""
    cut = validation_cut(len(y_rest), val_size)
    parts = {"train": y_rest[:cut], "validation": y_rest[cut:], "test": y_test}
    return {name: (int((part == 0).sum()), int((part != 0).sum())) for name, part in parts.items()}


def too_few(counts: dict[str, tuple[int, int]]) -> list[str]:
    """The splits short of a class, described ("validation: 0 positive of 412")."""
    return [
        f"{name}: {positives} positive, {negatives} negative"
        for name, (negatives, positives) in counts.items()
        if min(negatives, positives) < MIN_PER_CLASS
    ]
