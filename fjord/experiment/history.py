"""Past experiments: list, describe, fetch and re-run them (what Plz gives its users).

An experiment's directory keeps what a rerun needs: the kind of run, its parameters or search
space, its options, its seed and the pickled function. ``rerun(run_id)`` runs the same function with
the same inputs and seed, so a seeded run reproduces its metrics; ``overrides`` change parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fjord.errors import NotFoundError
from fjord.experiment.runner import EXPERIMENTS, ExperimentError, ExperimentResult
from fjord.experiment.stopping import MedianStopping
from fjord.experiment.trial import FUNCTION_FILE
from fjord.fs import SharedFS
from fjord.lineage import RunRecord, get_run, list_runs
from fjord.projects import get_project


def _directory(run_id: str) -> tuple[RunRecord, SharedFS]:
    record = get_run(run_id)
    if record.stage != "experiment":
        raise NotFoundError(f"run {run_id} is a {record.stage} run, not an experiment")
    fs = get_project(record.project).fs.sub(f"{EXPERIMENTS}/{run_id}")
    if not fs.exists("experiment.json"):
        raise NotFoundError(f"{fs.uri()} holds no experiment.json: the experiment's files are gone")
    return record, fs


def list_experiments(project: str | None = None, limit: int = 50) -> list[RunRecord]:
    """The most recent experiment runs, newest first."""
    return list_runs(project=project, stage="experiment", limit=limit)


def describe(run_id: str) -> dict[str, Any]:
    """What ``Experiments/<run_id>/experiment.json`` says: definition, seed, trials, status."""
    _, fs = _directory(run_id)
    description: dict[str, Any] = json.loads(fs.read_text("experiment.json"))
    description["uri"] = fs.uri()
    return description


def fetch_output(run_id: str, destination: str | Path) -> Path:
    """Copy the experiment's files (trials, models, logs, TensorBoard events) to ``destination``."""
    _, fs = _directory(run_id)
    target = Path(destination) / run_id
    fs.download("", target)
    return target


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "units=64"]`` as values (JSON where it parses: numbers, lists, booleans)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ExperimentError(f"--param {pair!r}: expected name=value")
        try:
            overrides[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[name.strip()] = raw
    return overrides


def rerun(run_id: str, overrides: Mapping[str, Any] | None = None) -> ExperimentResult:
    """Run experiment ``run_id`` again: same function, inputs, options and seed; ``overrides`` replace
    parameters (for a search: fix them to one value)."""
    import cloudpickle

    from fjord import experiment

    record, fs = _directory(run_id)
    saved = json.loads(fs.read_text("experiment.json"))
    function = cloudpickle.loads(fs.read_bytes(FUNCTION_FILE))
    definition = dict(saved["definition"])
    options: dict[str, Any] = {
        "name": saved["name"],
        "project": record.project,
        "seed": saved["seed"],
        "env": saved.get("env") or None,
        "trial_timeout": saved.get("trial_timeout"),
        "parent_run_id": run_id,
    }
    if saved["kind"] in ("launch", "distributed"):
        params = {**definition["params"], **(overrides or {})}
        if saved["kind"] == "launch":
            return experiment.launch(function, params, optimization_key=saved["optimization_key"], **options)
        env = dict(options.pop("env") or {})
        legacy = env.pop("TF_USE_LEGACY_KERAS", None) == "1"
        return experiment.distributed(
            function, params, num_workers=definition["num_workers"], max_restarts=definition["max_restarts"],
            optimization_key=saved["optimization_key"], legacy_keras=legacy, env=env or None, **options,
        )  # fmt: skip
    space = {**experiment.space_from_description(definition.pop("space")), **(overrides or {})}
    options.update(
        direction=saved["direction"],
        optimization_key=saved["optimization_key"],
        early_stopping=MedianStopping(**saved["stopping"]),
        parallel=saved.get("parallel"),
    )
    definition.pop("trials", None)
    search = {
        "grid_search": experiment.grid_search,
        "random_search": experiment.random_search,
        "differential_evolution": experiment.differential_evolution,
    }[saved["kind"]]
    return search(function, space, **definition, **options)
