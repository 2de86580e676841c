"""The experiment API on real Spark executors and a real MLflow server: searches, early stopping,
retries, failures, reruns and the files a run leaves."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import time
from pathlib import Path

import pytest

from fjord import experiment
from fjord.experiment.history import describe, fetch_output, rerun
from fjord.experiment.tracking import TrackingError, client
from fjord.lineage import get_run, list_runs
from fjord.projects import create_project
from tests.conftest import run_fjord
from tests.waiting import wait_for

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def project(spark, tracking):
    return create_project("lab")


def quadratic(x, noise=0.0):
    """A cheap 'training': five steps climbing towards a peak at x=0.3; seeded noise."""
    rng = random.Random(experiment.seed())
    value = 0.0
    for step in range(5):
        value = (1 - (x - 0.3) ** 2) * (step + 1) / 5 + noise * rng.random()
        experiment.report(step, {"score": value})
    (experiment.trial_dir() / "note.txt").write_text(f"x={x}")
    return {"score": value, "x": x}


def test_grid_search_finds_the_best_and_tracks_every_trial(project):
    result = experiment.grid_search(
        quadratic, {"x": [0.0, 0.3, 0.9]}, optimization_key="score", project=project, early_stopping=False
    )
    assert [t.status for t in result.trials] == ["succeeded"] * 3
    assert result.best_params == {"x": 0.3}
    assert result.metrics["score"] == pytest.approx(1.0)

    files = project.fs.sub(f"Experiments/{result.run_id}")
    assert set(files.listdir("trials")) == {"trial-0001", "trial-0002", "trial-0003"}
    assert files.read_text("trials/trial-0002/note.txt") == "x=0.3"
    progress = json.loads(files.read_text("trials/trial-0002/progress.json"))
    assert [p["step"] for p in progress] == [0, 1, 2, 3, 4]

    mlflow = client(os.environ["FJORD_MLFLOW__TRACKING_URI"])
    parent = mlflow.get_run(result.mlflow_run_id)
    assert parent.data.tags["fjord.run_id"] == result.run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_score"] == pytest.approx(1.0)
    children = mlflow.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'"
    )
    assert len(children) == 3
    history = mlflow.get_metric_history(result.trials[1].mlflow_run_id, "score")
    assert [m.step for m in history if m.step > 0] == [1, 2, 3, 4]  # per step, and the final value
    artifacts = {a.path for a in mlflow.list_artifacts(result.trials[1].mlflow_run_id)}
    assert {"note.txt", "output.log", "params.json", "progress.json"} <= artifacts

    record = get_run(result.run_id)
    assert record.status == "succeeded" and record.stage == "experiment"
    assert record.params["best"]["params"] == {"x": 0.3}


def meet(place, timeout=120.0):
    """Pair this trial with the next one to arrive, by markers in ``place``: the 1st, 3rd, ... trial
    waits until its partner has started, so the two run at once whatever the start-up costs."""
    import time
    from pathlib import Path

    rank = 1
    while True:
        try:
            os.close(os.open(Path(place) / f"arrived-{rank}", os.O_CREAT | os.O_EXCL))
            break
        except FileExistsError:
            rank += 1
    deadline = time.monotonic() + timeout
    while rank % 2 and not (Path(place) / f"arrived-{rank + 1}").exists():
        assert time.monotonic() < deadline, f"no trial ran beside trial {rank}"
        time.sleep(0.05)


def paired(x, place):
    meet(place)
    return {"score": x}


def test_trials_run_in_parallel_on_the_executor_slots(project, tmp_path):
    result = experiment.grid_search(
        paired,
        {"x": [0.1, 0.2, 0.3, 0.4], "place": [str(tmp_path)]},
        optimization_key="score",
        project=project,
        early_stopping=False,
    )
    assert [t.status for t in result.trials] == ["succeeded"] * 4
    files = project.fs.sub(f"Experiments/{result.run_id}/trials")
    spans = sorted(
        (r["started"], r["ended"])
        for r in (json.loads(files.read_text(f"{t}/result.json")) for t in files.listdir())
    )
    overlaps = sum(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert overlaps >= 2, spans  # two slots: trials overlap in time


def where_am_i(x, place=None):
    if x == 3:  # a failed trial: its process must not serve another
        (experiment.trial_dir() / f"pid-{os.getpid()}").write_text("")
        raise RuntimeError("failed on purpose")
    if place:
        meet(place)
    cores = os.sched_getaffinity(0)
    return {"score": x, "pid": os.getpid(), "cores": len(cores), "core": min(cores)}


def test_trials_keep_to_their_cores_and_a_search_reuses_its_processes(project, tmp_path):
    result = experiment.grid_search(
        where_am_i, {"x": [1, 2, 3, 4, 5, 6, 7], "place": [str(tmp_path)]}, optimization_key="score",
        project=project, early_stopping=False,
    )  # fmt: skip
    done = [t for t in result.trials if t.status == "succeeded"]
    assert len(done) == 6 and all(t.metrics["cores"] == 1 for t in done)  # local[2]: a core a slot
    files = project.fs.sub(f"Experiments/{result.run_id}/trials")
    spans = {t.trial: json.loads(files.read_text(f"{t.trial}/result.json")) for t in done}
    overlapping = [
        (a, b)
        for a, b in itertools.combinations(done, 2)
        if spans[a.trial]["started"] < spans[b.trial]["ended"]
        and spans[b.trial]["started"] < spans[a.trial]["ended"]
    ]
    assert len(overlapping) >= 3  # the trials met in pairs
    for a, b in overlapping:
        assert a.metrics["core"] != b.metrics["core"]  # trials running at once never share a core
    pids = {t.metrics["pid"] for t in done}
    assert len(pids) < len(done)  # processes served more than one trial
    failed = next(t for t in result.trials if t.params["x"] == 3)
    failed_pids = {int(n.split("-")[1]) for n in files.listdir(failed.trial) if n.startswith("pid-")}
    assert failed.attempts == 2 and len(failed_pids) == 2  # the retry got a new process...
    retried_at = json.loads(files.read_text(f"{failed.trial}/result.json"))["started"]
    later = [t for t in done if spans[t.trial]["started"] > retried_at]
    assert later and not failed_pids & {t.metrics["pid"] for t in later}  # ...and none served again
    (alone,) = experiment.launch(where_am_i, {"x": 1}, project=project).trials
    assert alone.metrics["cores"] == min(2, len(os.sched_getaffinity(0)))  # a lone trial: the executor's


def steady(x):
    """Twelve steps at the score ``x``: the stopping rule decides in ``report``, at the step itself, so
    a hopeless trial's step count says where it was stopped, however fast it runs."""
    for step in range(12):
        experiment.report(step, {"score": x})
    return {"score": x}


def test_median_stopping_stops_hopeless_trials(project):
    result = experiment.grid_search(
        steady,
        {"x": [0.9, 0.8, 0.7, 0.1, 0.2, 0.05]},
        optimization_key="score",
        project=project,
        early_stopping=experiment.MedianStopping(min_trials=3, start_step=1),
        parallel=1,  # in order: the three good trials complete before the bad ones start
    )
    statuses = {t.params["x"]: (t.status, t.steps) for t in result.trials}
    assert {x: s for x, (s, _) in statuses.items()} == {
        0.9: "succeeded", 0.8: "succeeded", 0.7: "succeeded",
        0.1: "stopped", 0.2: "stopped", 0.05: "stopped",
    }  # fmt: skip
    assert all(steps == 2 for x, (_, steps) in statuses.items() if x < 0.5)  # stopped at step 1
    assert result.best_params == {"x": 0.9}


def flaky(x):
    """Fails on its first attempt (the process is killed, as an OOM would), succeeds on the second."""
    marker = experiment.trial_dir() / "attempted"
    if not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), 9)
    return {"score": x}


def broken(x):
    if x == 1:
        raise RuntimeError("the data loader exploded")
    if x == 2:
        return {"score": float("nan")}
    if x == 3:
        return {"loss": 0.1}
    return {"score": x}


def test_a_killed_trial_is_retried_once(project):
    result = experiment.launch(flaky, {"x": 5}, project=project)
    (trial,) = result.trials
    assert (trial.status, trial.attempts, trial.metrics) == ("succeeded", 2, {"score": 5.0})
    log = project.fs.read_text(f"Experiments/{result.run_id}/trials/trial-0001/output.log")
    assert "attempt 1" in log and "attempt 2" in log


def test_failing_trials_are_recorded_and_the_search_goes_on(project):
    result = experiment.grid_search(
        broken, {"x": [1, 2, 3, 4]}, optimization_key="score", project=project, early_stopping=False
    )
    by_x = {t.params["x"]: t for t in result.trials}
    assert by_x[1].status == "failed" and by_x[1].attempts == 2
    assert by_x[1].error == "RuntimeError: the data loader exploded"
    assert by_x[2].error == "ValueError: the training function returned a non-finite value for score"
    assert "returned no 'score' metric" in by_x[3].error
    assert by_x[4].status == "succeeded" and result.best_params == {"x": 4}
    log = project.fs.read_text(f"Experiments/{result.run_id}/trials/{by_x[1].trial}/output.log")
    assert "Traceback" in log and "the data loader exploded" in log


def test_no_trial_succeeding_fails_the_experiment_and_keeps_partial_results(project):
    with pytest.raises(experiment.ExperimentError, match="none of 2 trial"):
        experiment.grid_search(broken, {"x": [1, 2]}, optimization_key="score", project=project)
    (record,) = list_runs("lab", "experiment")
    assert record.status == "failed" and "none of 2 trial(s) succeeded" in record.error
    saved = describe(record.run_id)
    assert saved["status"] == "failed" and len(saved["trials"]) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: experiment.random_search(quadratic, {"x": (1.0, 0.0)}, project=p), "is empty"),
        (lambda p: experiment.random_search(quadratic, {"x": []}, project=p), "list of values is empty"),
        (lambda p: experiment.random_search(quadratic, {"x": [1]}, samples=0, project=p), "samples"),
        (lambda p: experiment.grid_search(quadratic, {"x": (0.0, 1.0)}, project=p), "needs lists"),
        (
            lambda p: experiment.differential_evolution(
                quadratic, {"x": (0.0, 1.0)}, population=2, project=p
            ),
            "population",
        ),
        (lambda p: experiment.launch("not a function", project=p), "must be callable"),
        (lambda p: experiment.launch(quadratic, {"x": 1}, trial_timeout=0, project=p), "trial_timeout"),
        (
            lambda p: experiment.grid_search(quadratic, {"x": [1]}, trial_timeout="9", project=p),
            "trial_timeout",
        ),
    ],
)
def test_bad_searches_are_refused_before_anything_runs(project, call, message):
    with pytest.raises((experiment.SearchSpaceError, experiment.ExperimentError), match=message):
        call(project)
    assert list_runs("lab", "experiment") == []
    assert not project.fs.exists("Experiments") or project.fs.listdir("Experiments") == []


def hangs(x, place, every=False):
    """Trial ``x`` (or every trial) hangs; each leaves its pid in ``place``."""
    import time

    (Path(place) / f"started-{x}").write_text(str(os.getpid()))
    if x == 2 or every:
        time.sleep(3600)
    return {"score": x}


def test_a_trial_past_its_timeout_is_killed_and_the_search_goes_on(project, tmp_path):
    result = experiment.grid_search(
        hangs, {"x": [1, 2, 3], "place": [str(tmp_path)]}, optimization_key="score", project=project,
        early_stopping=False, trial_timeout=15, parallel=1,
    )  # fmt: skip
    by_x = {t.params["x"]: t for t in result.trials}
    hung = by_x[2]
    assert (hung.status, hung.attempts) == ("failed", 1)  # a timed-out trial is not retried
    assert hung.error == "killed after trial_timeout (15 s)" and hung.seconds >= 15
    hung_pid = int((tmp_path / "started-2").read_text())
    wait_for(lambda: not _alive(hung_pid), 60, "the timed-out trial's process to end")
    assert by_x[1].status == by_x[3].status == "succeeded"  # the search went on after the kill...
    assert int((tmp_path / "started-3").read_text()) != hung_pid  # ...in a new process
    assert describe(result.run_id)["trial_timeout"] == 15


def test_an_interrupted_search_stops_at_once(project, tmp_path):
    """Ctrl-C while two trials run and four wait: the running ones are killed, the rest never start."""
    import signal
    import threading

    def interrupt_when_both_run():
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) >= 2, 300, "two trials to start")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        experiment.grid_search(
            hangs, {"x": [1, 2, 3, 4, 5, 6], "place": [str(tmp_path)], "every": [True]},
            optimization_key="score", project=project, early_stopping=False,
        )  # fmt: skip
    (record,) = list_runs("lab", "experiment")
    assert record.status == "failed"
    assert len(list(tmp_path.glob("started-*"))) == 2  # the four queued trials never started
    assert describe(record.run_id)["status"] == "failed"
    pids = [int(p.read_text()) for p in tmp_path.glob("started-*")]
    # killed with their tasks (the hang bound only: the trials would otherwise sleep an hour)
    wait_for(lambda: not any(_alive(pid) for pid in pids), 60, "the trial processes to end")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_an_unreachable_tracking_server_stops_the_run_before_any_trial(project, monkeypatch):
    monkeypatch.setenv("FJORD_MLFLOW__TRACKING_URI", "http://127.0.0.1:9")
    from fjord.config import reset_settings

    reset_settings()
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        experiment.launch(quadratic, {"x": 0.1}, project=project)
    assert list_runs("lab", "experiment") == []


def test_a_seeded_search_reruns_to_the_same_metrics_and_parameters_can_change(project, tmp_path):
    space = {"x": (0.0, 1.0), "noise": 0.1}
    first = experiment.random_search(quadratic, space, samples=3, optimization_key="score", project=project,
                                     seed=11, early_stopping=False)  # fmt: skip
    again = rerun(first.run_id)
    assert [t.params for t in again.trials] == [t.params for t in first.trials]
    assert [t.metrics for t in again.trials] == [t.metrics for t in first.trials]
    assert get_run(again.run_id).parent_run_id == first.run_id

    changed = run_fjord("experiment", "rerun", first.run_id, "--param", "noise=0.0")
    assert changed.returncode == 0, changed.stderr
    newest = list_runs("lab", "experiment")[0]
    assert newest.params["space"]["noise"] == 0.0 and newest.run_id not in (first.run_id, again.run_id)

    shown = run_fjord("experiment", "show", first.run_id)
    assert shown.returncode == 0 and "trial-0003" in shown.stdout and "seed 11" in shown.stdout
    fetched = fetch_output(first.run_id, tmp_path / "out")
    assert (fetched / "trials" / "trial-0001" / "result.json").is_file()
    assert (fetched / "function.pkl").is_file()


def test_differential_evolution_improves_on_its_first_generation(project):
    result = experiment.differential_evolution(
        quadratic, {"x": (0.0, 1.0)}, generations=3, population=4, optimization_key="score",
        project=project, seed=3, early_stopping=False,
    )  # fmt: skip
    assert len(result.trials) == 12
    first_generation = max(t.metrics["score"] for t in result.trials[:4])
    later = max(t.metrics["score"] for t in result.trials[4:])
    assert later > first_generation  # a later generation found a better point than the first had
    assert result.metrics["score"] == max(first_generation, later)
    assert math.isclose(result.best_params["x"], 0.3, abs_tol=0.3)


def test_cli_shows_unknown_runs_as_one_line_errors(project):
    shown = run_fjord("experiment", "show", "experiment-nope")
    assert shown.returncode == 3 and shown.stderr.count("\n") == 1 and "unknown run" in shown.stderr


def train_mwms(epochs=4, rows=4096, kill_at=None, hang_at=None):
    """Data-parallel Keras training under MultiWorkerMirroredStrategy; worker 1 dies once at
    ``kill_at`` (SIGKILL, as a lost node would) and hangs once at ``hang_at``, if asked."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(experiment.seed())
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index, count = experiment.worker()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    shard = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shard(count, index)
        .batch(64)
        .repeat()
        .with_options(options)
    )
    with strategy.scope():
        model = tf.keras.Sequential(
            [tf.keras.layers.Dense(16, activation="relu"), tf.keras.layers.Dense(1, activation="sigmoid")]
        )
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    checkpoints = experiment.checkpoint_dir()

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            with open(checkpoints / f"epochs-{index}.log", "a") as log:
                log.write(f"{epoch}\n")
            if epoch == kill_at and index == 1 and not (checkpoints / "killed").exists():
                (checkpoints / "killed").write_text("once")
                os.kill(os.getpid(), 9)
            if epoch == hang_at and index == 1 and not (checkpoints / "hung").exists():
                (checkpoints / "hung").write_text("once")
                time.sleep(3600)  # worker 0 waits in its next all-reduce: the whole run hangs

    backup = tf.keras.callbacks.BackupAndRestore(str(checkpoints / "backup"))
    history = model.fit(shard, epochs=epochs, steps_per_epoch=rows // 64 // count, verbose=0,
                        callbacks=[backup, Record()])  # fmt: skip
    return {"accuracy": float(history.history["accuracy"][-1]), "workers": count}


def test_distributed_training_resumes_from_its_checkpoint_after_a_worker_dies_or_hangs(project):
    result = experiment.distributed(
        train_mwms, {"epochs": 4, "kill_at": 2, "hang_at": 3}, num_workers=2, project=project, seed=4,
        trial_timeout=60,
    )  # fmt: skip
    (trial,) = result.trials
    assert trial.status == "succeeded" and trial.attempts == 3  # killed, then hung, then done
    assert trial.metrics["workers"] == 2 and trial.metrics["accuracy"] > 0.7  # it learned (chance: 0.5)
    checkpoints = project.fs.sub(f"Experiments/{result.run_id}/checkpoints/trial-0001")
    # worker 1 logs each epoch it begins, then dies at 2 and hangs at 3: each restart resumed there
    assert checkpoints.read_text("epochs-1.log").split() == ["0", "1", "2", "2", "3", "3"]
    # worker 0 is stopped wherever it is when worker 1 fails (before or after it began epoch 2), but
    # it too never began again at 0 and never went back
    epochs = [int(e) for e in checkpoints.read_text("epochs-0.log").split()]
    assert epochs[:2] == [0, 1] and epochs.count(0) == 1 and epochs == sorted(epochs) and epochs[-1] == 3
    workers = project.fs.sub(f"Experiments/{result.run_id}/trials/trial-0001")
    assert set(workers.listdir()) >= {"worker-0", "worker-1"}
    config = json.loads(workers.read_text("worker-1/params.json"))
    assert (config["worker"], config["workers"]) == (1, 2)


def test_distributed_needs_as_many_slots_as_workers(project):
    with pytest.raises(experiment.ExperimentError, match="needs 3 task slots at once; the cluster has 2"):
        experiment.distributed(train_mwms, num_workers=3, project=project)
