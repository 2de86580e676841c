"""The training pipeline, defined once: its steps in order, the stage job each runs and the arguments
each gets. Airflow's DAGs (through fjord/airflow/tasks.py) and ``fjord run --local`` (fjord/cli/run_cmd.py)
are both built from it, so they cannot drift apart.

A step's arguments are literals, a run parameter (:class:`Parameter`: the DAG's params, or the
command line's) or a field of an earlier step's result (:class:`ResultOf`: an XCom in Airflow, the
returned dataclass in-process); :meth:`Step.arguments` resolves them either way. What is particular
to a project (its feature views, labels, model, serving) is not written here: it is a
:class:`PipelineConfig`, read from the project's ``pipeline.yaml`` (the demo's: ``demo/fraud/``).

The stage jobs themselves are named by module (:data:`STAGES`), never imported: the core does not
depend on the stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fjord.errors import ConfigError

DEMO_PIPELINE = Path(__file__).resolve().parents[1] / "demo" / "fraud" / "pipeline.yaml"


# -- the stage jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A stage job: its entry module (``python -m``, or the spark-submit script), whether it is a
    Spark application, its spec class as ``module:Class`` (the module also has ``run(spec)``), and
    whether a run may reuse an earlier one's result on unchanged inputs (fjord/stepcache.py)."""

    module: str
    spark: bool
    spec: str
    cacheable: bool = False


STAGES: dict[str, Stage] = {
    "etl": Stage("jobs.etl.main", spark=True, spec="jobs.etl.job:EtlSpec", cacheable=True),
    "features": Stage(
        "jobs.features.main", spark=True, spec="jobs.features.job:FeaturesSpec", cacheable=True
    ),
    "train": Stage("jobs.train.main", spark=True, spec="jobs.train.job:TrainSpec", cacheable=True),
    "bless": Stage("jobs.serve.main", spark=False, spec="jobs.serve.deploy:DeploySpec"),
    "deploy": Stage("jobs.serve.main", spark=False, spec="jobs.serve.deploy:DeploySpec"),
    "batch_inference": Stage("jobs.batch.main", spark=False, spec="jobs.batch.job:BatchInferenceSpec"),
    "maintenance": Stage(
        "jobs.features.maintenance", spark=False, spec="jobs.features.maintenance:MaintenanceSpec"
    ),
    "performance": Stage("jobs.performance.main", spark=False, spec="jobs.performance.job:PerformanceSpec"),
    "skew": Stage("jobs.skew.main", spark=False, spec="jobs.skew.job:SkewSpec"),
    "canary": Stage("jobs.serve.canary_main", spark=False, spec="jobs.serve.canary:CanarySpec"),
}


# -- what a project sets ------------------------------------------------------------------------------


class ServingConfig(BaseModel):
    """How the deployed model is served: the online features a request is completed with."""

    model_config = ConfigDict(extra="forbid")

    feature_view: str
    transformer: str = Field(description="module:function turning a request into the model's inputs")
    input_rules: str | None = Field(default=None, description="the ETL rules a request is checked by")
    input_rules_mode: str = "flag"
    passthrough: list[str] = Field(default_factory=list, description="request fields logged, never fed")


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = Field(default=4, ge=1)
    epochs: int = Field(default=2, ge=1)


class RetrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_days: int = Field(default=90, ge=1)
    replay_hours: float | None = Field(default=24, gt=0)


class PipelineConfig(BaseModel):
    """A project's pipeline settings (``pipeline.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    project: str
    model: str = Field(description="the registered model and its serving")
    feature_view: str = Field(description="the view the model trains on and batch scoring reads")
    labels_group: str = Field(description="the feature group the served predictions are judged by")
    key: str = Field(description="the request field joining a prediction to its label and features")
    search: SearchConfig = Field(default_factory=SearchConfig)
    serving: ServingConfig
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)


def load_pipeline_config(path: Path = DEMO_PIPELINE) -> PipelineConfig:
    """``path`` as a :class:`PipelineConfig`; a :class:`ConfigError` naming the file and the key."""
    try:
        return PipelineConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipeline settings ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        errors = exc.errors()
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo first
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown setting {where!r}") from None
        raise ConfigError(f"{path}: {where}: {error['msg']}") from None


# -- the steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """An argument given by the run: a DAG param, or the command line's value."""

    name: str


@dataclass(frozen=True)
class ResultOf:
    """An argument taken from an earlier step's result (the field ``key`` of task ``task``'s)."""

    task: str
    key: str


@dataclass(frozen=True)
class Step:
    """One stage job of the pipeline. ``task_id`` is its task's id in the DAG (``model.train``: task
    ``train`` of the task group ``model``)."""

    task_id: str
    stage: str
    doc: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task_id.rsplit(".", 1)[-1]

    def arguments(
        self, param: Callable[[str], Any], result: Callable[[str, str], Any], **extra: Any
    ) -> dict[str, Any]:
        """The stage's arguments, ``param`` and ``result`` resolving the references (and ``extra``
        added): Airflow passes functions making templates, the in-process runner the values."""

        def value(v: Any) -> Any:
            if isinstance(v, Parameter):
                return param(v.name)
            if isinstance(v, ResultOf):
                return result(v.task, v.key)
            return v

        return {k: value(v) for k, v in {**self.args, **extra}.items()}


@dataclass(frozen=True)
class TrainingPipeline:
    """Landing batches -> ETL + validation (``ingest``, one run per batch) -> beside each other, the
    realized performance and skew of what is served (``measure``) and the model's steps
    (``training``: training dataset -> train -> bless -> deploy)."""

    config: PipelineConfig
    ingest: Step
    measure: tuple[Step, ...]
    training: tuple[Step, ...]

    def steps(self) -> Iterator[Step]:
        """Every step, in an order that runs each after the steps it needs."""
        yield self.ingest
        yield from self.measure
        yield from self.training

    def step(self, task_id: str) -> Step:
        return next(s for s in self.steps() if s.task_id == task_id)

    def defaults(self) -> dict[str, Any]:
        """The run parameters' default values (a DAG's params, ``fjord run``'s)."""
        return {
            "project": self.config.project,
            "feature_view": self.config.feature_view,
            "samples": self.config.search.samples,
            "epochs": self.config.search.epochs,
        }


def training_pipeline(config: PipelineConfig, *, replay_hours: float | None = None) -> TrainingPipeline:
    """The pipeline over ``config``. With ``replay_hours``, the gate also replays the candidate on the
    serving's traffic of those last hours (jobs/serve/replay.py) and refuses it on the replay's rules."""
    project = Parameter("project")
    replay = {"replay_hours": replay_hours} if replay_hours else {}
    version = ResultOf("model.train", "model_version")
    serving = config.serving
    return TrainingPipeline(
        config=config,
        ingest=Step(
            "ingest.etl",
            "etl",
            "Spark ETL + Great Expectations validation, publishing one commit per feature group. "
            "A batch that fails validation stops the run here, with its report's path.",
            {"project": project, "batch": Parameter("batch")},
        ),
        measure=(
            Step(
                "performance",
                "performance",
                "The labels the ETL just published, joined with the archived predictions: realized "
                "performance per model version and window beside its estimate; an alert below the "
                "blessed AUC.",
                {
                    "project": project,
                    "model_name": config.model,
                    "labels_group": config.labels_group,
                    "key": config.key,
                },
            ),
            Step(
                "skew",
                "skew",
                "The inputs the model was served, against the features the ETL just computed for the "
                "same transactions: per feature, the share beyond tolerance and the worst rows; an "
                "alert, and the drift alerts of the same window marked suspect, when a share exceeds "
                "its threshold.",
                {
                    "project": project,
                    "model_name": config.model,
                    "view": config.feature_view,
                    "key": config.key,
                },
            ),
        ),
        training=(
            Step(
                "training_dataset",
                "features",
                "The feature view and a new point-in-time training dataset version (its commits recorded).",
                {"project": project, "view": Parameter("feature_view")},
            ),
            Step(
                "model.train",
                "train",
                "Random search with early stopping on Spark executors, the best configuration retrained, "
                "evaluated on held-out later rows, optimized (TFLite) and registered in MLflow as "
                "`candidate`.",
                {
                    "project": project,
                    "model_name": config.model,
                    "feature_view": Parameter("feature_view"),
                    "training_dataset_version": ResultOf("training_dataset", "training_dataset_version"),
                    "samples": Parameter("samples"),
                    "epochs": Parameter("epochs"),
                },
            ),
            Step(
                "model.bless",
                "bless",
                "The gate: the candidate against the champion on the candidate's held-out rows (and, "
                "when set, replayed on the traffic the champion served). Refused: deploy is skipped and "
                "the champion keeps serving.",
                {
                    "project": project,
                    "model_name": config.model,
                    "version": version,
                    "bless_only": True,
                    **replay,
                },
            ),
            Step(
                "model.deploy",
                "deploy",
                "Serve the blessed version (TF Serving's REST and gRPC), smoke-test it, move `champion`.",
                {
                    "project": project,
                    "model_name": config.model,
                    "version": version,
                    "feature_view": serving.feature_view,
                    "transformer": serving.transformer,
                    "input_rules": serving.input_rules,
                    "input_rules_mode": serving.input_rules_mode,
                    "passthrough": serving.passthrough,
                    **replay,
                },
            ),
        ),
    )
