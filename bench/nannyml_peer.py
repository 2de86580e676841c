"""The NannyML side of ``bench/performance_estimation.py``. Runs inside NannyML's own venv
(bench/.venv-nannyml): NannyML 0.13 pins libraries Fjord's environment does not share.

    python bench/nannyml_peer.py DATA_DIR CHUNK_ROWS THRESHOLD

Reads ``reference.parquet`` and ``analysis.parquet`` (y_pred_proba, y_true), fits NannyML's CBPE on
the reference and estimates ROC AUC, precision and recall per chunk of ``CHUNK_ROWS`` analysis rows.
Prints one JSON line: the estimates per chunk and the seconds ``estimate`` took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nannyml as nml
import pandas as pd


def main() -> None:
    data, chunk, threshold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    reference = pd.read_parquet(data / "reference.parquet")
    analysis = pd.read_parquet(data / "analysis.parquet").drop(columns=["y_true"])
    for frame in (reference, analysis):
        frame["y_pred"] = (frame["y_pred_proba"] >= threshold).astype("int64")
    estimator = nml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="y_true",
        metrics=["roc_auc", "precision", "recall"],
        chunk_size=chunk,
        problem_type="classification_binary",
    )
    estimator.fit(reference)
    started = time.perf_counter()
    results = estimator.estimate(analysis)
    seconds = time.perf_counter() - started
    frame = results.filter(period="analysis").to_df()
    chunks = [
        {m: float(frame[(m, "value")].iloc[i]) for m in ("roc_auc", "precision", "recall")}
        for i in range(len(frame))
    ]
    print(json.dumps({"nannyml": nml.__version__, "chunks": chunks, "seconds": seconds}))


if __name__ == "__main__":
    main()
