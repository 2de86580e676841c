"""Experiments: run a plain Python training function on Spark executors, alone or as a search.

In the style of HopsML's ``hops.experiment``::

    from fjord import experiment

    def train(lr, units, dropout):             # plain Keras code; returns metrics
        ...
        for epoch in range(epochs):
            ...
            experiment.report(epoch, val_auc)  # lets the search stop a hopeless trial early
        return {"auc": auc, "loss": loss}

    experiment.launch(train, {"lr": 1e-3, "units": 64, "dropout": 0.1}, name="fraud")
    experiment.grid_search(train, {"lr": [1e-3, 1e-2], "units": [32, 64]}, optimization_key="auc")
    experiment.random_search(train, {"lr": (1e-4, 1e-1, "log"), "units": [32, 64, 128]}, samples=16)
    experiment.differential_evolution(train, {"lr": (1e-4, 1e-1)}, generations=4, population=8)
    experiment.distributed(train_mwms, num_workers=2)   # MultiWorkerMirroredStrategy on executors

Every call returns an :class:`ExperimentResult` and leaves ``Experiments/<run_id>/`` in the project
(parameters, metrics, logs, TensorBoard events, what the function wrote to :func:`trial_dir`), a run
in MLflow with a nested run per trial, and a lineage record. Searches stop hopeless trials with the
median stopping rule (:class:`MedianStopping`) unless ``early_stopping=False``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fjord.config import get_settings
from fjord.errors import ConfigError
from fjord.experiment.space import SearchSpace, SearchSpaceError, parse_space
from fjord.experiment.stopping import Direction, MedianStopping
from fjord.experiment.trial import (
    TrialStopped,
    checkpoint_dir,
    report,
    seed,
    tensorboard_dir,
    trial_dir,
    worker,
)
from fjord.projects import Project, get_project

if TYPE_CHECKING:
    from fjord.experiment.runner import ExperimentResult, ExperimentRun, TrialResult

_RUNNER_NAMES = ("ExperimentError", "ExperimentResult", "TrialResult")


def __getattr__(name: str) -> Any:
    # The driver side (Spark, MLflow, lineage) loads on first use: a trial process imports this
    # package for report() and must start fast.
    if name in _RUNNER_NAMES:
        from fjord.experiment import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'fjord.experiment' has no attribute {name!r}")


def _check_takes(function: Any, names: Iterable[str], what: str) -> None:
    """The function must take exactly these keyword arguments (each trial calls ``function(**params)``):
    checked before anything is submitted, so a mismatch is one line, not every trial failing twice."""
    import inspect

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or C function: nothing to check
        return
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        shown = getattr(function, "__name__", type(function).__name__)
        raise SearchSpaceError(
            f"{shown}{signature} cannot take the {what} {sorted(names)}: {exc}",
            hint="name the function's parameters after the keys (or give the others defaults)",
        ) from None


def _new_run(*args: Any, **kwargs: Any) -> ExperimentRun:
    from fjord.experiment.runner import ExperimentRun

    return ExperimentRun(*args, **kwargs)


__all__ = [
    "ExperimentError",
    "ExperimentResult",
    "MedianStopping",
    "SearchSpaceError",
    "TrialResult",
    "TrialStopped",
    "checkpoint_dir",
    "differential_evolution",
    "distributed",
    "grid_search",
    "launch",
    "random_search",
    "report",
    "seed",
    "tensorboard_dir",
    "trial_dir",
    "worker",
]

Function = Callable[..., Any]


def _project(project: str | Project | None) -> Project:
    if isinstance(project, Project):
        return project
    name = project or get_settings().project
    if not name:
        raise ConfigError("no project given: pass project=... or set the default project (FJORD_PROJECT)")
    return get_project(name)


def _stopping(early_stopping: bool | MedianStopping) -> MedianStopping:
    if isinstance(early_stopping, MedianStopping):
        return early_stopping
    return MedianStopping(enabled=bool(early_stopping))


def launch(
    function: Function,
    params: Mapping[str, Any] | None = None,
    *,
    name: str = "experiment",
    project: str | Project | None = None,
    seed: int | None = None,
    optimization_key: str | None = None,
    trial_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ExperimentResult:
    """Run ``function(**params)`` once on an executor (retried once if it fails).

    Every kind of run takes ``trial_timeout``: seconds after which a trial is killed and counted as
    failed (not retried); for ``distributed``, each attempt of the stage, so a hung worker ends in
    a restart instead of a wait forever."""
    params = dict(params or {})
    _check_takes(function, params, "parameters")
    run = _new_run(
        _project(project),
        "launch",
        function,
        name=name,
        optimization_key=optimization_key,
        direction="max",
        stopping=MedianStopping(enabled=False),
        seed=seed,
        definition={"params": params},
        trial_timeout=trial_timeout,
        env=env,
        parent_run_id=parent_run_id,
    )
    return run.run(lambda r: r.trials([params]))


def _search(
    kind: str,
    function: Function,
    space: Mapping[str, Any],
    body: Callable[[ExperimentRun, SearchSpace, random.Random], object],
    definition: dict[str, Any],
    *,
    name: str,
    project: str | Project | None,
    direction: Direction,
    optimization_key: str,
    early_stopping: bool | MedianStopping,
    seed: int | None,
    parallel: int | None,
    trial_timeout: float | None,
    env: Mapping[str, str] | None,
    parent_run_id: str | None,
) -> ExperimentResult:
    parsed = parse_space(space)
    if not optimization_key or not isinstance(optimization_key, str):
        raise SearchSpaceError("a search needs optimization_key: the name of the metric to optimize")
    _check_takes(function, space, "search space's parameters")
    run = _new_run(
        _project(project),
        kind,
        function,
        name=name,
        optimization_key=optimization_key,
        direction=direction,
        stopping=_stopping(early_stopping),
        seed=seed,
        definition={"space": {k: _describe(v) for k, v in space.items()}, **definition},
        parallel=parallel,
        trial_timeout=trial_timeout,
        env=env,
        parent_run_id=parent_run_id,
    )
    return run.run(lambda r: body(r, parsed, random.Random(r.seed)))


def _describe(spec: Any) -> Any:
    """A space entry as JSON: a range (a tuple) as ``{"range": [...]}``, to tell it from a list."""
    return {"range": list(spec)} if isinstance(spec, tuple) else spec


def space_from_description(described: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of how ``experiment.json`` keeps a space."""
    return {
        name: tuple(spec["range"]) if isinstance(spec, dict) and set(spec) == {"range"} else spec
        for name, spec in described.items()
    }


def grid_search(
    function: Function,
    space: Mapping[str, Any],
    *,
    direction: Direction = "max",
    optimization_key: str = "metric",
    name: str = "grid_search",
    project: str | Project | None = None,
    early_stopping: bool | MedianStopping = True,
    seed: int | None = None,
    parallel: int | None = None,
    trial_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ExperimentResult:
    """Every combination of the listed values; the best by ``optimization_key``."""
    grid = parse_space(space).grid()  # checked before anything starts
    return _search(
        "grid_search", function, space, lambda r, s, rng: r.trials(grid), {"trials": len(grid)},
        name=name, project=project, direction=direction, optimization_key=optimization_key,
        early_stopping=early_stopping, seed=seed, parallel=parallel, trial_timeout=trial_timeout, env=env,
        parent_run_id=parent_run_id,
    )  # fmt: skip


def random_search(
    function: Function,
    space: Mapping[str, Any],
    *,
    samples: int = 10,
    direction: Direction = "max",
    optimization_key: str = "metric",
    name: str = "random_search",
    project: str | Project | None = None,
    early_stopping: bool | MedianStopping = True,
    seed: int | None = None,
    parallel: int | None = None,
    trial_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ExperimentResult:
    """``samples`` trials drawn from ``space`` (ranges uniformly or on a log scale; lists uniformly)."""
    if not isinstance(samples, int) or samples < 1:
        raise SearchSpaceError(f"samples must be a positive integer, not {samples!r}")

    def body(run: ExperimentRun, parsed: SearchSpace, rng: random.Random) -> None:
        run.trials([parsed.sample(rng) for _ in range(samples)])

    return _search(
        "random_search", function, space, body, {"samples": samples},
        name=name, project=project, direction=direction, optimization_key=optimization_key,
        early_stopping=early_stopping, seed=seed, parallel=parallel, trial_timeout=trial_timeout, env=env,
        parent_run_id=parent_run_id,
    )  # fmt: skip


def differential_evolution(
    function: Function,
    space: Mapping[str, Any],
    *,
    generations: int = 4,
    population: int = 8,
    mutation: float = 0.5,
    crossover: float = 0.7,
    direction: Direction = "max",
    optimization_key: str = "metric",
    name: str = "differential_evolution",
    project: str | Project | None = None,
    early_stopping: bool | MedianStopping = True,
    seed: int | None = None,
    parallel: int | None = None,
    trial_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ExperimentResult:
    """Differential evolution (DE/rand/1/bin): a first random ``population``, then
    ``generations - 1`` rounds in which each member meets a mutant and the better one survives.
    A generation's trials run in parallel."""
    if not isinstance(generations, int) or generations < 1:
        raise SearchSpaceError(f"generations must be a positive integer, not {generations!r}")
    if not isinstance(population, int) or population < 4:
        raise SearchSpaceError(f"population must be an integer of at least 4, not {population!r}")
    if not 0 < mutation <= 2 or not 0 <= crossover <= 1:
        raise SearchSpaceError("mutation must be in (0, 2] and crossover in [0, 1]")

    def score(trial: TrialResult) -> float:
        value = trial.metrics.get(optimization_key) if trial.status != "failed" else None
        if value is None:
            return float("-inf")
        return value if direction == "max" else -value

    def body(run: ExperimentRun, parsed: SearchSpace, rng: random.Random) -> None:
        members = [parsed.to_vector(parsed.sample(rng)) for _ in range(population)]
        results = run.trials(parsed.from_vector(v) for v in members)
        for _ in range(generations - 1):
            candidates = []
            for i, target in enumerate(members):
                a, b, c = rng.sample([m for j, m in enumerate(members) if j != i], 3)
                forced = rng.randrange(len(target))
                candidates.append([
                    min(max(a[d] + mutation * (b[d] - c[d]), 0.0), 1.0)
                    if d == forced or rng.random() < crossover else target[d]
                    for d in range(len(target))
                ])  # fmt: skip
            challengers = run.trials(parsed.from_vector(v) for v in candidates)
            for i, challenger in enumerate(challengers):
                if score(challenger) >= score(results[i]):
                    members[i], results[i] = candidates[i], challenger

    return _search(
        "differential_evolution", function, space, body,
        {"generations": generations, "population": population, "mutation": mutation, "crossover": crossover},
        name=name, project=project, direction=direction, optimization_key=optimization_key,
        early_stopping=early_stopping, seed=seed, parallel=parallel, trial_timeout=trial_timeout, env=env,
        parent_run_id=parent_run_id,
    )  # fmt: skip


def distributed(
    function: Function,
    params: Mapping[str, Any] | None = None,
    *,
    num_workers: int = 2,
    name: str = "distributed",
    project: str | Project | None = None,
    seed: int | None = None,
    optimization_key: str | None = None,
    max_restarts: int = 2,
    legacy_keras: bool = True,
    trial_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ExperimentResult:
    """Synchronous data-parallel training: ``function(**params)`` on ``num_workers`` executors at once
    (a Spark barrier stage), each with ``TF_CONFIG`` set for ``tf.distribute.MultiWorkerMirroredStrategy``.

    The function creates the strategy, reads its shard (:func:`worker` gives ``(index, count)``) and
    passes ``tf.keras.callbacks.BackupAndRestore(experiment.checkpoint_dir())`` to ``fit``: if a
    worker dies, the stage is restarted (up to ``max_restarts`` times) and training resumes from the
    last checkpoint instead of epoch 0. ``legacy_keras`` runs the workers with ``tf-keras``
    (``TF_USE_LEGACY_KERAS=1``): Keras 3's ``model.fit`` fails under this strategy (keras#20585).
    The result is the chief's (worker 0).
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise SearchSpaceError(f"num_workers must be a positive integer, not {num_workers!r}")
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise SearchSpaceError(f"max_restarts must be a non-negative integer, not {max_restarts!r}")
    params = dict(params or {})
    _check_takes(function, params, "parameters")
    extra = {"TF_USE_LEGACY_KERAS": "1"} if legacy_keras else {}
    run = _new_run(
        _project(project),
        "distributed",
        function,
        name=name,
        optimization_key=optimization_key,
        direction="max",
        stopping=MedianStopping(enabled=False),
        seed=seed,
        definition={"params": params, "num_workers": num_workers, "max_restarts": max_restarts},
        trial_timeout=trial_timeout,
        env={**extra, **(env or {})},
        parent_run_id=parent_run_id,
    )
    return run.run(lambda r: r.distributed(params, num_workers, max_restarts))
