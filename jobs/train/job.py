"""The training job: a training dataset version -> a searched, evaluated, optimized, registered model.

``run(TrainSpec(project="fraud"))``:

1. checks the feature view, the training dataset version and the MLflow server before any work;
2. runs a random search over learning rate, width and dropout on Spark executors (the experiment
   API, median early stopping), each trial scored by validation ROC AUC;
3. retrains the best configuration (seeded) and exports a SavedModel whose serving signature takes
   the named raw features and returns the fraud probability, calibrated on the validation set;
4. evaluates it on the held-out, later part of the data: ROC AUC, PR AUC, precision and recall at
   the validation set's best-F1 threshold, calibration (Brier score, ECE); checks calibration on the
   validation split, which estimating performance without labels assumes (fjord/evaluation.py);
5. optimizes it (TensorFlow Lite, optionally quantized), kept only within ``tolerance`` AUC;
6. publishes ``Models/<name>/<version>/`` and registers the version in the MLflow model registry
   with the alias ``candidate``, tagged with the run id, the training dataset version and metrics.

Nothing is registered unless every step succeeded.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

import featurestore
from fjord import experiment
from fjord.errors import AlreadyExistsError, FjordError, NotFoundError
from fjord.evaluation import calibration_check
from fjord.experiment.tracking import client as mlflow_client
from fjord.experiment.tracking import tracking_uri
from fjord.faults import crash_point
from fjord.fs import SharedFS
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.progress import progress
from fjord.projects import get_project
from jobs.train.splits import class_counts, too_few

MODELS = "Models"
CANDIDATE = "candidate"
_CODE = [Path(__file__).parent]


class TrainError(FjordError):
    """The training job cannot run as specified."""

    exit_code = 2


class TrainSpec(JobSpec):
    """What to train: which training data, how hard to search, what to register."""

    project: str
    feature_view: str = "fraud_demo"
    feature_view_version: int = Field(default=1, ge=1)
    training_dataset_version: int | None = Field(default=None, ge=1, description="default: the latest")
    model_name: str = "fraud"
    samples: int = Field(default=8, ge=1, description="random-search trials")
    epochs: int = Field(default=6, ge=1)
    batch_size: int = Field(default=512, ge=1)
    test_size: float = Field(default=0.2, gt=0, lt=1)
    val_size: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 42
    early_stopping: bool = True
    optimize: bool = True
    quantize: bool = True
    tolerance: float = Field(default=0.005, ge=0, description="largest AUC drop optimization may cost")


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: int
    model_uri: str
    training_dataset_version: int
    best_params: dict[str, Any]
    metrics: dict[str, float]
    optimization: dict[str, Any] | None
    search: str
    trials: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        opt = self.optimization
        optimized = (
            f"; optimized ({opt['method']}): {'kept' if opt['kept'] else 'dropped'}, AUC "
            f"{opt['auc_before']:.4f} -> {opt['auc_after']:.4f} (validation), latency "
            f"{opt['latency_ms_before']:.2f} -> "
            f"{opt['latency_ms_after']:.2f} ms"
            if opt
            else ""
        )
        return (
            f"model {self.model_name} v{self.model_version} ({CANDIDATE}) from training dataset "
            f"v{self.training_dataset_version}: test ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}, "
            f"precision {m['precision']:.3f} / recall {m['recall']:.3f} at {m['threshold']:.3f}, "
            f"Brier {m['brier']:.4f}; search {self.search} {self.trials}{optimized}; {self.model_uri}"
        )


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that are numbers (a one-class test set has no ROC AUC): what MLflow can store."""
    return {k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}


def _view(spec: TrainSpec) -> featurestore.FeatureView:
    try:
        return featurestore.connect(spec.project).get_feature_view(
            spec.feature_view, spec.feature_view_version
        )
    except NotFoundError as exc:
        raise TrainError(
            f"{exc}",
            hint="create it and its training data with the features job (python -m jobs.features.main)",
        ) from None


def _dataset_version(spec: TrainSpec) -> int:
    view = _view(spec)
    versions = view.get_training_dataset_versions()
    if spec.training_dataset_version is None:
        if not versions:
            raise TrainError(
                f"feature view {spec.feature_view} v{spec.feature_view_version} has no training dataset",
                hint="create one with feature_view.create_training_data()",
            )
        return max(versions)
    if spec.training_dataset_version not in versions:
        raise TrainError(
            f"feature view {spec.feature_view} v{spec.feature_view_version} has no training dataset "
            f"version {spec.training_dataset_version} (it has {sorted(versions) or 'none'})"
        )
    return spec.training_dataset_version


def _check_splits(spec: TrainSpec, version: int) -> None:
    """Each split of the dataset holds both classes, or the job stops here (no trial would learn)."""
    view = _view(spec)
    _, _, y_rest, y_test = view.train_test_split(
        spec.test_size, time_ordered=True, training_dataset_version=version
    )
    label = view.labels[0]
    counts = class_counts(y_rest[label].to_numpy(), y_test[label].to_numpy(), spec.val_size)
    short = too_few(counts)
    if short:
        rows = sum(sum(c) for c in counts.values())
        raise TrainError(
            f"training dataset {spec.feature_view}_{spec.feature_view_version} v{version} ({rows:,} rows) "
            f"has a split without both classes ({'; '.join(short)}): no trial could be evaluated",
            hint="land more data (more rows or days) or change --test-size / --val-size",
        )


def run(spec: TrainSpec) -> TrainResult:
    """Search, train, evaluate, optimize and register; :class:`TrainError` on bad input."""
    project = get_project(spec.project)
    version = _dataset_version(spec)
    _check_splits(spec, version)
    uri = tracking_uri()  # unreachable MLflow: stop before any training
    earlier = _registered_by_an_earlier_try(spec, project, uri)
    if earlier is not None:
        with track_run(
            project, "train", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
        ) as record:
            record.add_input(_view(spec).training_dataset_uri(version), str(version), kind="training_dataset")
            record.add_output(earlier.model_uri, str(earlier.model_version), kind="model")
        return earlier
    # TensorFlow loads only now: bad input is answered in one line, without TensorFlow's start-up logs.
    from jobs.train.model import best_f1_threshold, evaluate, load_splits, predict_saved_model, train_trial
    from jobs.train.optimize import optimize

    data = {
        "project": spec.project,
        "view": spec.feature_view,
        "view_version": spec.feature_view_version,
        "dataset_version": version,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "test_size": spec.test_size,
        "val_size": spec.val_size,
    }
    with track_run(
        project,
        "train",
        params=spec.model_dump(mode="json"),
        code=_CODE,
        **spec.run_tree(),
    ) as record:
        dataset_uri = _view(spec).training_dataset_uri(version)
        record.add_input(dataset_uri, str(version), kind="training_dataset")
        progress(f"train: random search, {spec.samples} trial(s) on training dataset v{version}")
        search = experiment.random_search(
            train_trial,
            {"lr": (1e-4, 3e-2, "log"), "units": [16, 32, 64], "dropout": (0.0, 0.4), **data},
            samples=spec.samples,
            optimization_key="val_auc",
            direction="max",
            name=f"{spec.model_name}-search",
            project=project,
            early_stopping=spec.early_stopping,
            seed=spec.seed,
            parent_run_id=record.run_id,
        )
        best = {k: search.best_params[k] for k in ("lr", "units", "dropout")}
        progress(f"train: search {search.run_id} done; training the final model with {best}")
        final = experiment.launch(
            train_trial,
            {**best, **data, "export": True},
            name=f"{spec.model_name}-final",
            project=project,
            seed=spec.seed,
            optimization_key="val_auc",
            parent_run_id=record.run_id,
        )
        trial_dir = SharedFS(final.uri).sub(f"trials/{final.best.trial}")  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory(prefix="fjord-model-") as tmp:
            local = Path(tmp)
            for name in ("val_scores.npy", "features.json"):
                local.joinpath(name).write_bytes(trial_dir.read_bytes(name))
            trial_dir.download("model", local / "model")
            splits = load_splits(spec.project, spec.feature_view, spec.feature_view_version, version,
                                 spec.test_size, spec.val_size)  # fmt: skip
            threshold = best_f1_threshold(splits.y_val, np.load(local / "val_scores.npy"))
            metrics = evaluate(splits.y_test, predict_saved_model(local / "model", splits.x_test), threshold)
            # Estimating performance before labels land (CBPE) assumes calibrated scores: checked here.
            calibration = calibration_check(splits.y_val, predict_saved_model(local / "model", splits.x_val))
            progress("train: final model evaluated" + ("; optimizing it" if spec.optimize else ""))
            optimization = None
            if spec.optimize:
                optimization = optimize(
                    local / "model",
                    splits.x_val,
                    splits.y_val,
                    quantize=spec.quantize,
                    tolerance=spec.tolerance,
                )
            record.params["metrics"], record.params["optimization"] = finite(metrics), optimization
            counts = {
                s: sum(t.status == s for t in search.trials) for s in ("succeeded", "stopped", "failed")
            }
            model_version, model_uri = _register(
                spec, project, local / "model", final.best.mlflow_run_id, uri, record.run_id, version,
                metrics, optimization, best, splits.x_test.head(5),
                {"search": search.run_id, "trials": counts, "calibration": calibration},
            )  # fmt: skip
        record.add_output(model_uri, str(model_version), kind="model")
        return TrainResult(
            run_id=record.run_id,
            model_name=spec.model_name,
            model_version=model_version,
            model_uri=model_uri,
            training_dataset_version=version,
            best_params=best,
            metrics=metrics,
            optimization=optimization,
            search=search.run_id,
            trials=counts,
        )


def _log_mlflow_model(uri: str, mlflow_run_id: str | None, model_dir: Path, example: Any) -> Any:
    """Log the SavedModel as an MLflow pyfunc model (jobs/train/mlflow_model.py) in the trial's run;
    its ModelInfo (``model_uri``, ``model_id``)."""
    import mlflow
    import pandas as pd
    import tensorflow as tf
    from mlflow.models import infer_signature

    from jobs.train.model import OUTPUT, predict_saved_model

    example = example.astype("float64")  # the schema MLflow checks: JSON numbers and pandas floats pass
    predictions = pd.DataFrame({OUTPUT: predict_saved_model(model_dir, example)})
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=mlflow_run_id):
        info = mlflow.pyfunc.log_model(
            name="mlflow_model",
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"saved_model": str(model_dir)},
            signature=infer_signature(example, predictions),
            input_example=example,
            # Stated, not inferred: inference would load the model once more to trace its imports.
            pip_requirements=[
                f"tensorflow=={tf.__version__}",
                f"pandas=={pd.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
        )
    return info


def _registered_by_an_earlier_try(spec: TrainSpec, project: Any, uri: str) -> TrainResult | None:
    """The model an earlier try of this run id registered and published, if one did.

    A task is retried when its job was killed after registering but before its completion was
    recorded: the retry reuses that version instead of training and registering another.
    """
    if spec.run_id is None:
        return None
    client = mlflow_client(uri)
    mine = [
        v for v in client.search_model_versions(f"name='{spec.model_name}'")
        if v.tags.get("fjord.run_id") == spec.run_id
    ]  # fmt: skip
    for found in sorted(mine, key=lambda v: -int(v.version)):
        rel = f"{MODELS}/{spec.model_name}/{found.version}"
        if not project.fs.is_published(rel):
            continue
        card = json.loads(project.fs.read_text(f"{rel}/fjord-model.json"))
        client.set_model_version_tag(
            spec.model_name, found.version, "fjord.serving_path", project.fs.uri(rel)
        )
        newest = max(int(v.version) for v in client.search_model_versions(f"name='{spec.model_name}'"))
        if int(found.version) == newest:  # the kill may have come before the alias was set
            client.set_registered_model_alias(spec.model_name, CANDIDATE, found.version)
        nan = float("nan")
        return TrainResult(
            run_id=spec.run_id,
            model_name=spec.model_name,
            model_version=int(found.version),
            model_uri=project.fs.uri(rel),
            training_dataset_version=int(card.get("training_dataset_version", 0)),
            best_params=card.get("params", {}),
            metrics={
                **dict.fromkeys(("roc_auc", "pr_auc", "precision", "recall", "threshold", "brier"), nan),
                **card.get("metrics", {}),
            },
            optimization=card.get("optimization"),
            search=str(card.get("search", "")),
            trials=card.get("trials", {}),
        )
    return None


def _calibration_tags(calibration: dict[str, Any] | None) -> dict[str, str]:
    if not calibration:
        return {}
    return {"fjord.calibration.ece": f"{calibration['ece']:.4g}",
            "fjord.calibration.calibrated": str(calibration["calibrated"]).lower()}  # fmt: skip


def _register(
    spec: TrainSpec,
    project: Any,
    model_dir: Path,
    mlflow_run_id: str | None,
    uri: str,
    run_id: str,
    dataset_version: int,
    metrics: dict[str, float],
    optimization: dict[str, Any] | None,
    params: dict[str, Any],
    example: Any,
    extra: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """A new model version: logged as an MLflow model (pyfunc, with its signature and an input
    example) and registered, published to ``Models/<name>/<version>/`` (the TensorFlow Serving
    layout), then given the ``candidate`` alias. A failure deletes the version."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    tags = {
        "fjord.run_id": run_id,
        "fjord.project": spec.project,
        "fjord.training_dataset": f"{spec.feature_view}_{spec.feature_view_version}/{dataset_version}",
        **{f"metric.{k}": f"{v:.6g}" for k, v in finite(metrics).items()},
        **{f"param.{k}": str(v) for k, v in params.items()},
        **_calibration_tags((extra or {}).get("calibration")),
    }
    try:
        client.get_registered_model(spec.model_name)
    except MlflowException:
        client.create_registered_model(spec.model_name, description="Fjord: card fraud probability")
    # The final trial's MLflow run holds the model: MLflow's own tools load and serve the version.
    logged = _log_mlflow_model(uri, mlflow_run_id, model_dir, example)
    registered = client.create_model_version(
        spec.model_name, logged.model_uri, run_id=mlflow_run_id, tags=tags, model_id=logged.model_id
    )
    version = int(registered.version)
    crash_point("train.registered")  # in MLflow, not yet published nor a candidate
    try:
        rel = f"{MODELS}/{spec.model_name}/{version}"
        if project.fs.is_published(rel):  # MLflow's numbers are its database's: a new one starts at 1
            raise AlreadyExistsError(
                f"MLflow numbered this model {spec.model_name} v{version}, but {project.fs.uri(rel)} already "
                "holds a published model that this MLflow registry did not register; nothing was registered",
                hint="point mlflow.tracking_uri at the MLflow that registered the models under Models/, "
                "or train under another model name",
            )
        with project.fs.publish(rel) as out:
            for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
                out.upload(str(path), path.relative_to(model_dir).as_posix())
            card = {
                "run_id": run_id,
                "metrics": finite(metrics),
                "optimization": optimization,
                "params": params,
                "training_dataset_version": dataset_version,
                **(extra or {}),
            }
            out.write_text("fjord-model.json", json.dumps(card, indent=2, default=str))
        client.set_model_version_tag(spec.model_name, str(version), "fjord.serving_path", project.fs.uri(rel))
        client.set_registered_model_alias(spec.model_name, CANDIDATE, str(version))
    except BaseException:
        client.delete_model_version(spec.model_name, str(version))
        raise
    return version, project.fs.uri(rel)
