"""Performance estimated without labels (CBPE): Fjord's histogram estimate against NannyML's CBPE,
same scores, same chunks, same run; and both against the labels that then land.

Scores come from a calibrated model of a rare positive class (beta(0.6, 6), mean 0.09), labels are
drawn from them, and the analysis period shifts the score distribution chunk by chunk (the positive
rate moves, so the metrics do). For each chunk of ``--chunk`` rows:

- NannyML 0.13's ``CBPE`` (fitted on a labelled reference period), in its own venv
  (``bench/.venv-nannyml``, built here with uv on first use);
- Fjord's estimate from the chunk's 1,000-bin score histogram (``fjord.evaluation.estimate``: what the
  monitor's stream computes per window);
- the realized metrics on the chunk's labels (scikit-learn).

Reports, per metric, the largest difference between Fjord's and NannyML's estimates, each one's
error against the realized figure, and the time each takes per million rows. Writes
``bench/results/performance_estimation.json`` and ``tests/data/nannyml_cbpe.json`` (NannyML's
estimates, which ``tests/unit/test_evaluation.py`` holds Fjord's to).

    python -m bench.performance_estimation [--chunks 10 --chunk 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv-nannyml"
REQUIREMENTS = ["nannyml==0.13.1", "statsmodels", "pandas<3"]  # statsmodels: imported, not declared
RESULTS = ROOT / "bench" / "results"
GOLDEN = ROOT / "tests" / "data" / "nannyml_cbpe.json"
THRESHOLD = 0.3
METRICS = ("roc_auc", "precision", "recall")


def scores_and_labels(chunks: int, chunk: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, analysis): calibrated scores and the labels drawn from them; the analysis period's
    scores shift chunk by chunk."""
    rng = np.random.default_rng(seed)
    reference = rng.beta(0.6, 6, chunks * chunk)
    analysis = np.concatenate([rng.beta(0.6 + 0.08 * i, 6, chunk) for i in range(chunks)])

    def frame(p: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"y_pred_proba": p, "y_true": (rng.random(len(p)) < p).astype("int64")})

    return frame(reference), frame(analysis)


def ensure_nannyml() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        from uv import find_uv_bin

        uv = str(find_uv_bin())
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *REQUIREMENTS], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=20_000)
    args = parser.parse_args()

    from fjord.evaluation import estimate, histogram, realized

    reference, analysis = scores_and_labels(args.chunks, args.chunk)
    with tempfile.TemporaryDirectory(prefix="bench-cbpe-") as tmp:
        reference.to_parquet(Path(tmp) / "reference.parquet")
        analysis.to_parquet(Path(tmp) / "analysis.parquet")
        peer_script = ROOT / "bench" / "nannyml_peer.py"
        argv = [str(ensure_nannyml()), str(peer_script), tmp, str(args.chunk), str(THRESHOLD)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"NannyML failed:\n{done.stderr[-4000:]}")
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    ours, truth, seconds = [], [], 0.0
    for i in range(args.chunks):
        part = analysis.iloc[i * args.chunk : (i + 1) * args.chunk]
        started = time.perf_counter()
        _, rows, sums = histogram(part["y_pred_proba"].to_numpy())
        ours.append({m: estimate(rows, sums, THRESHOLD)[m] for m in METRICS})
        seconds += time.perf_counter() - started
        found = realized(part["y_true"].to_numpy(), part["y_pred_proba"].to_numpy(), THRESHOLD)
        truth.append({m: found[m] for m in METRICS})
    theirs = peer["chunks"]

    def worst(a: list[dict], b: list[dict], metric: str) -> float:
        return max(abs(x[metric] - y[metric]) for x, y in zip(a, b, strict=True))

    rows_total = args.chunks * args.chunk
    result = {
        "rows": rows_total, "chunks": args.chunks, "chunk": args.chunk, "threshold": THRESHOLD,
        "nannyml": peer["nannyml"],
        "fjord_vs_nannyml_max_abs": {m: worst(ours, theirs, m) for m in METRICS},
        "fjord_vs_realized_max_abs": {m: worst(ours, truth, m) for m in METRICS},
        "nannyml_vs_realized_max_abs": {m: worst(theirs, truth, m) for m in METRICS},
        "seconds_per_million_rows": {"fjord": seconds / rows_total * 1e6,
                                     "nannyml": peer["seconds"] / rows_total * 1e6},
        "per_chunk": {"fjord": ours, "nannyml": theirs, "realized": truth},
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "performance_estimation.json").write_text(json.dumps(result, indent=2))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    golden = {"chunks": args.chunks, "chunk": args.chunk, "threshold": THRESHOLD, "seed": 1,
              "nannyml": peer["nannyml"], "estimates": theirs}  # fmt: skip
    GOLDEN.write_text(json.dumps(golden, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_chunk"}, indent=2))


if __name__ == "__main__":
    main()
