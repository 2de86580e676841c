"""Experiment benchmarks: what running training through ``fjord.experiment`` costs and saves.

One run, same machine, same Keras training function (an MLP on synthetic tabular data, one
intra-op thread per trial: the two cores are the two task slots):

- **launch overhead**: ``experiment.launch`` (Spark and MLflow already up, as in a notebook) against
  the same function called directly in a fresh Python process (TensorFlow import included in both);
- **parallel search**: a 16-trial random search on 2 executor slots against the same 16 trials run
  one after another in one process, with one TensorFlow thread as the trials have, and with
  TensorFlow's default threads (both cores: the fair peer), ``--runs`` times (5) interleaved; and
  the machine's own limit for two slots: two plain Python processes, each pinned to one core with one
  TensorFlow thread, taking the same trials from a shared queue (no Spark, no MLflow, no files). Each
  trial's time is split into the function's own (``result.json``'s ``started`` to ``ended``) and
  what the platform adds around it (the driver's count less the function's);
- **early stopping**: the same search with the median stopping rule, trial-seconds and best metric;
- **distributed**: samples/s of ``experiment.distributed`` with 1 and 2 workers.

    python -m bench.experiment [--epochs 10] [--rows 60000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
# From too slow to learn (1e-5) to fast: a real spread of outcomes, as a search space has.
SPACE = {"lr": (1e-5, 3e-2, "log"), "units": [32, 64, 128], "dropout": (0.0, 0.5)}


def train(
    lr: float = 1e-3, units: int = 64, dropout: float = 0.1, epochs: int = 6, rows: int = 60_000
) -> dict:
    """A plain Keras training function: validation AUC reported every epoch."""
    import keras
    import numpy as np

    from fjord import experiment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype("float32")
    logits = x[:, :5].sum(axis=1) - 0.5 * x[:, 5] * x[:, 6] - 2.5
    y = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype("float32")
    cut = int(rows * 0.8)
    model = keras.Sequential(
        [keras.layers.Dense(int(units), activation="relu"), keras.layers.Dropout(float(dropout)),
         keras.layers.Dense(int(units), activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    model.compile(
        keras.optimizers.Adam(float(lr)), "binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")]
    )
    auc = 0.0
    for epoch in range(int(epochs)):
        model.fit(x[:cut], y[:cut], batch_size=256, epochs=1, verbose=0)
        auc = float(model.evaluate(x[cut:], y[cut:], batch_size=4096, verbose=0)[1])
        experiment.report(epoch, {"auc": auc})
    return {"auc": auc}


def train_distributed(epochs: int = 3, rows: int = 200_000) -> dict:
    """Data-parallel training under MultiWorkerMirroredStrategy; samples/s of the chief."""
    import numpy as np
    import tensorflow as tf

    from fjord import experiment

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index, count = experiment.worker()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype("float32")
    y = (x[:, :5].sum(axis=1) > 0).astype("float32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    batch = 256
    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shard(count, index)
        .batch(batch)
        .repeat()
        .with_options(options)
    )
    with strategy.scope():
        model = tf.keras.Sequential(
            [tf.keras.layers.Dense(128, activation="relu"), tf.keras.layers.Dense(128, activation="relu"),
             tf.keras.layers.Dense(1, activation="sigmoid")]
        )  # fmt: skip
        model.compile("adam", "binary_crossentropy")
    steps = rows // batch // count
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)  # warm-up: graph building, first collectives
    start = time.perf_counter()
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch * count * epochs / seconds, "seconds": seconds}


def direct(epochs: int, rows: int) -> float:
    """Wall time of ``train`` in a fresh process, from start to return (TensorFlow import included)."""
    code = (
        "import time; t=time.perf_counter(); from bench.experiment import train; "
        f"train(epochs={epochs}, rows={rows}); print(time.perf_counter()-t)"
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **THREADS}, check=True, capture_output=True
    )
    return time.perf_counter() - start


def sequential(params: list[dict], epochs: int, rows: int, threads: dict[str, str]) -> tuple[float, float]:
    """The trials one after another in one process, with TensorFlow's ``threads`` settings:
    (seconds, best auc)."""
    code = (
        "import json, sys, time; from bench.experiment import train; params = json.loads(sys.argv[1]); "
        f"t=time.perf_counter(); aucs=[train(**p, epochs={epochs}, rows={rows})['auc'] for p in params]; "
        "print(json.dumps([time.perf_counter()-t, max(aucs)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)], env={**os.environ, **threads}, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    seconds, best = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, best


def side_by_side(params: list[dict], epochs: int, rows: int, slots: int = 2) -> float:
    """The machine's limit for ``slots`` task slots: as many plain processes, each pinned to one core
    with one TensorFlow thread, taking the trials in order from a shared queue (a claim is an
    exclusively created file); seconds until the last one ends."""
    import tempfile

    code = (
        "import json, os, sys; from bench.experiment import train; "
        "params, claims, core = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]); "
        "os.sched_setaffinity(0, {core})\n"
        "for i, p in enumerate(params):\n"
        "    try: os.close(os.open(os.path.join(claims, str(i)), os.O_CREAT | os.O_EXCL))\n"
        "    except FileExistsError: continue\n"
        f"    train(**p, epochs={epochs}, rows={rows})\n"
    )
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as claims:
        start = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(params), claims, str(cores[i % len(cores)])],
                env={**os.environ, **THREADS},
                stdout=subprocess.DEVNULL,
            )
            for i in range(slots)
        ]
        if any([process.wait() for process in processes]):  # every one waited for
            raise RuntimeError("a side-by-side process failed")
        return time.perf_counter() - start


def _split(result) -> dict[str, float]:
    """Medians per trial: the driver's seconds, the function's own (from each trial's result.json),
    and the difference, what the platform adds (Spark task, hand-over, files)."""
    from fjord.fs import SharedFS

    fs = SharedFS(result.uri)
    driver, function = [], []
    for trial in result.trials:
        raw = json.loads(fs.read_text(f"trials/{trial.trial}/result.json"))
        if "started" in raw and "ended" in raw:
            driver.append(trial.seconds)
            function.append(raw["ended"] - raw["started"])
    added = [d - f for d, f in zip(driver, function, strict=True)]
    return {
        "driver_s": statistics.median(driver),
        "function_s": statistics.median(function),
        "added_s": statistics.median(added),
    }


PARTS = ("launch", "search", "distributed")


def _trial_seconds(result) -> float:
    return sum(t.seconds for t in result.trials)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--launch-rows", type=int, default=300_000, help="rows of the one-minute training")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument(
        "--runs", type=int, default=5, help="runs of the search against its peers (medians and spread)"
    )
    args = parser.parse_args()
    os.environ.setdefault("FJORD_HOME", str(ROOT / "bench" / ".data" / "experiment"))
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"

    from fjord import experiment
    from fjord.experiment.tracking import tracking_uri
    from fjord.projects import ensure_project
    from fjord.spark import get_spark

    project = ensure_project("bench")
    get_spark(project)
    tracking_uri()
    common = {"project": project, "optimization_key": "auc", "seed": 7}
    results: dict[str, dict] = {}

    if "launch" in args.parts:
        results["launch"] = launch_overhead(experiment, common, args.epochs, args.launch_rows)
    if "search" in args.parts:
        results.update(search(experiment, common, args))
    if "distributed" in args.parts:
        results["distributed"] = distributed(experiment, project)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "experiment.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2))  # the other parts' last figures stay


def launch_overhead(experiment, common: dict, epochs: int, rows: int) -> dict:
    """A one-minute training: ``experiment.launch`` against the function run directly. The trial
    gets the direct run's thread settings. The first launch of a session also imports MLflow and
    warms the executors' Python workers."""
    fixed = {"epochs": epochs, "rows": rows}
    plain = direct(**fixed)
    launches = []
    for _ in range(2):
        start = time.perf_counter()
        experiment.launch(train, fixed, env=THREADS, **common)
        launches.append(time.perf_counter() - start)
    figures = {
        "direct_s": plain,
        "first_launch_s": launches[0],
        "next_launch_s": launches[1],
        "overhead_first": launches[0] / plain - 1,
        "overhead_next": launches[1] / plain - 1,
    }
    print(f"launch: {json.dumps(figures)}", flush=True)
    return figures


def search(experiment, common: dict, args: argparse.Namespace) -> dict:
    """The search in parallel against the same trials one after another, with one TensorFlow thread
    as the trials have and with TensorFlow's default threads (the fair peer: what a user gets
    without setting anything), ``args.runs`` times interleaved; then once with early stopping."""
    space = {**SPACE, "epochs": args.epochs, "rows": args.rows}
    runs: dict[str, list[float]] = {
        "parallel_s": [],
        "sequential_s": [],
        "sequential_default_threads_s": [],
        "side_by_side_s": [],
    }
    per_trial: list[dict[str, float]] = []
    for run in range(args.runs):
        start = time.perf_counter()
        full = experiment.random_search(train, space, samples=args.trials, early_stopping=False, **common)
        runs["parallel_s"].append(time.perf_counter() - start)
        params = [{k: t.params[k] for k in SPACE} for t in full.trials]
        seconds, best_sequential = sequential(params, args.epochs, args.rows, THREADS)
        runs["sequential_s"].append(seconds)
        runs["sequential_default_threads_s"].append(sequential(params, args.epochs, args.rows, {})[0])
        runs["side_by_side_s"].append(side_by_side(params, args.epochs, args.rows))
        per_trial.append(_split(full))
        print(f"search run {run + 1}: {json.dumps({k: v[-1] for k, v in runs.items()})}", flush=True)
    parallel = statistics.median(runs["parallel_s"])
    ratios = [p / d for p, d in zip(runs["parallel_s"], runs["sequential_default_threads_s"], strict=True)]
    results = {
        "search": {
            "trials": args.trials,
            "runs": args.runs,
            **{name: statistics.median(values) for name, values in runs.items()},
            "runs_s": runs,
            "ratio": parallel / statistics.median(runs["sequential_s"]),
            "ratio_to_default_threads": statistics.median(ratios),
            "ratio_to_default_threads_range": [min(ratios), max(ratios)],
            # The machine's own limit for two slots, against the same peer, and the search against it.
            "limit_ratio_to_default_threads": statistics.median(
                s / d
                for s, d in zip(runs["side_by_side_s"], runs["sequential_default_threads_s"], strict=True)
            ),
            "ratio_to_limit": statistics.median(
                p / s for p, s in zip(runs["parallel_s"], runs["side_by_side_s"], strict=True)
            ),
            "per_trial_s": {k: statistics.median(r[k] for r in per_trial) for k in per_trial[0]},
            "per_trial_runs": per_trial,
            "best_auc_sequential": best_sequential,
            "best_auc_parallel": full.metrics["auc"],
        }
    }
    start = time.perf_counter()
    stopped = experiment.random_search(train, space, samples=args.trials, **common)
    with_stopping = time.perf_counter() - start
    results["early_stopping"] = {
        "wall_s_without": runs["parallel_s"][-1],
        "wall_s_with": with_stopping,
        "trial_s_without": _trial_seconds(full),
        "trial_s_with": _trial_seconds(stopped),
        "epochs_without": sum(t.steps for t in full.trials),
        "epochs_with": sum(t.steps for t in stopped.trials),
        "stopped": sum(t.status == "stopped" for t in stopped.trials),
        "best_auc_without": full.metrics["auc"],
        "best_auc_with": stopped.metrics["auc"],
    }
    print(
        f"search: {json.dumps(results['search'])}\nearly stopping: {json.dumps(results['early_stopping'])}",
        flush=True,
    )
    return results


def distributed(experiment, project) -> dict:
    """Samples/s of ``experiment.distributed`` with 1 and 2 workers."""
    results = {}
    for workers in (1, 2):
        result = experiment.distributed(train_distributed, {}, num_workers=workers, project=project, seed=7)
        results[workers] = result.metrics
        print(
            f"distributed {workers} worker(s): {result.metrics['samples_per_s']:,.0f} samples/s", flush=True
        )
    return results


if __name__ == "__main__":
    main()
