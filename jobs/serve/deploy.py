"""The deployment job: a validated push of a registered model version to its serving (TFX's
Evaluator + Pusher), and the rollback.

``run(DeploySpec(project="fraud", model_name="fraud"))``:

1. takes the MLflow ``candidate`` (or ``version``) and the current ``champion``;
2. blesses: both versions predict the candidate's held-out test split (the time-ordered last part of
   its training dataset, the data its own evaluation used); the candidate is deployed only if its
   ROC AUC is not below the champion's by more than ``tolerance``. The decision and both figures go to
   the run record and to the version's MLflow tags, deployed or not (a refusal exits 3);
3. writes the project's ``models.config`` atomically: the candidate under the label ``stable`` (or
   ``canary`` with ``canary=True``, answering ``canary_percent`` % of the calls, or ``shadow`` with
   ``shadow=True``, answering none: jobs/serve/routing.py), specific versions only;
4. starts the project's model server unless it runs, waits until the version is AVAILABLE, and sends
   a smoke request of real held-out rows; a failure puts the old config back;
5. moves the MLflow alias ``champion`` (not for a canary or a shadow) and records the deployment in
   the lineage: served version -> model version -> training run -> training dataset -> feature
   commits -> batches.

``rollback(RollbackSpec(...))`` points ``stable`` back at the version deployed before and moves
``champion`` with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fjord.errors import FjordError, NotFoundError
from fjord.experiment.tracking import client as mlflow_client
from fjord.experiment.tracking import tracking_uri
from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.lineage import get_run, track_run
from fjord.projects import Project, get_project
from jobs.serve import serving

CANDIDATE, CHAMPION = "candidate", "champion"
_CODE = [Path(__file__).parent]


class DeployError(FjordError):
    """The deployment cannot run as specified (no candidate, a version that does not exist)."""

    exit_code = 2


class DeployRejected(FjordError):
    """The candidate is worse than the champion beyond the tolerance: nothing was deployed."""

    exit_code = 20


class DeploySpec(JobSpec):
    project: str
    model_name: str = "fraud"
    version: int | None = Field(default=None, ge=1, description="default: the MLflow candidate")
    serving: str | None = Field(default=None, description="the serving's name (default: the model's)")
    tolerance: float = Field(default=0.005, ge=0, description="largest ROC AUC drop accepted")
    canary: bool = Field(default=False, description="serve it as the canary beside the stable version")
    canary_percent: float = Field(default=10, ge=0, le=100, description="canary: its share of the calls")
    canary_key: str | None = Field(
        default=None, description="canary: the request field that keeps a caller on one side (card_id)"
    )
    shadow: bool = Field(default=False, description="score every call beside the served version, answer none")
    force: bool = Field(default=False, description="deploy without the blessing")
    bless_only: bool = Field(default=False, description="decide and record the blessing, deploy nothing")
    inference_logging: str = Field(default="ALL", description="ALL, PREDICTIONS, MODEL_INPUTS or NONE")
    feature_view: str | None = Field(default=None, description="VIEW[/VERSION] to fill request features from")
    transformer: str | None = Field(
        default=None, description="module:function: looked-up rows -> model inputs"
    )
    input_rules: str | None = Field(
        default=None, description="an ETL suite (transactions) whose row-wise rules requests must keep"
    )
    input_rules_mode: Literal["reject", "flag"] | None = Field(
        default=None, description="reject (a 400) or flag (served, violations logged); default reject"
    )
    passthrough: list[str] | None = Field(
        default=None, description="request fields logged with each call, never fed to the model (tid)"
    )
    timeout_s: float = Field(default=300, gt=0, description="how long to wait for the version to load")
    replay_hours: float | None = Field(
        default=None, gt=0, description="replay the candidate on the serving's last N hours of traffic first"
    )
    replay_auc_tolerance: float = Field(
        default=0.01, ge=0, description="replay: largest realized ROC AUC drop on labelled traffic"
    )
    replay_min_labelled: int = Field(
        default=200, ge=1, description="replay: labelled rows the AUC rule needs"
    )
    replay_max_flips: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="replay: largest share of decisions flipped, unless labels back it",
    )
    replay_max_p99_ms: float | None = Field(default=None, gt=0, description="replay: largest p99 latency")

    @model_validator(mode="after")
    def _one_label(self) -> DeploySpec:
        if self.canary and self.shadow:
            raise ValueError("a version is deployed as the canary or as the shadow, not both")
        return self

    @field_validator("passthrough", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``tid,order_id`` on a command line is a list of two."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class RollbackSpec(JobSpec):
    project: str
    serving: str = "fraud"


@dataclass
class DeployResult:
    run_id: str
    serving: str
    model_name: str
    version: int
    label: str
    previous: int | None
    blessing: dict[str, Any]
    url: str
    topic: str
    deployed: bool = True

    def summary(self) -> str:
        b = self.blessing
        if b["decision"] == "rollback":
            return f"serving {self.serving}: stable rolled back from v{self.previous} to v{self.version}"
        figures = (
            f"candidate ROC AUC {auc_text(b['candidate'])} vs champion v{b['champion_version']} "
            f"{auc_text(b['champion'])}"
            if b.get("champion_version") not in (None, self.version)
            else "no champion yet"
        )
        replay = b.get("replay")
        if replay and replay.get("rows"):
            figures += (f"; replayed on {replay['rows']:,} served rows: {replay['decision']}, "
                        f"{replay['agreement']:.1%} of decisions agree")  # fmt: skip
        elif replay:
            figures += f"; replay: {replay['decision']}"
        if not self.deployed:
            return (
                f"{self.model_name} v{self.version} {b['decision']} for serving {self.serving} "
                f"({figures}, tolerance {b['tolerance']}); not deployed (--bless-only)"
            )
        return (
            f"deployed {self.model_name} v{self.version} as {self.label} of serving {self.serving} "
            f"({b['decision']}: {figures}, tolerance {b['tolerance']}); "
            f"REST {self.url}/v1/models/{self.serving}; "
            f"inference log topic {self.topic}"
        )


def _version_of(client: Any, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _held_out(project: Project, client: Any, name: str, version: int) -> tuple[Any, Any]:
    """(x_test, y_test) of ``version``'s training run: the data its own evaluation used."""
    from mlflow.exceptions import MlflowException

    from jobs.train.model import load_splits

    try:
        tags = client.get_model_version(name, str(version)).tags
    except MlflowException:
        raise DeployError(f"model {name} has no version {version} in MLflow") from None
    if "fjord.run_id" not in tags:
        raise DeployError(f"model {name} v{version} was not registered by the training job (no fjord.run_id)")
    params = get_run(tags["fjord.run_id"]).params
    splits = load_splits(
        project.name, params["feature_view"], params["feature_view_version"],
        int(tags["fjord.training_dataset"].rsplit("/", 1)[1]), params["test_size"], params["val_size"],
    )  # fmt: skip
    return splits.x_test, splits.y_test


def _auc(project: Project, model: str, version: int, x: Any, y: Any) -> float | None:
    """ROC AUC of the served files of ``version`` on (x, y); None when the version reads other features."""
    import tempfile

    from jobs.serve.backends import read_signature_defs, signatures_of
    from jobs.train.model import predict_saved_model, roc_auc

    with tempfile.TemporaryDirectory(prefix="fjord-bless-") as tmp:
        local = Path(tmp) / "model"
        project.fs.download(f"Models/{model}/{version}", local)
        inputs = set(signatures_of(read_signature_defs(local))["serving_default"].inputs)
        if not inputs <= set(x.columns):
            return None
        return roc_auc(y, predict_saved_model(local, x[sorted(inputs)]))


def replay_verdict(result: Any, spec: DeploySpec) -> tuple[str, list[str]]:
    """The replay rules of ``spec`` applied to a replay's result: ("passed" | "refused", why)."""
    reasons = []
    labelled = result.auc_difference is not None and result.labelled >= spec.replay_min_labelled
    if labelled and result.auc_difference < -spec.replay_auc_tolerance:
        reasons.append(f"realized ROC AUC {result.auc_candidate:.4f} on {result.labelled:,} labelled rows "
                       f"is below the served {result.auc_served:.4f} by more than "
                       f"{spec.replay_auc_tolerance}")  # fmt: skip
    backed = labelled and result.auc_difference >= 0
    share = 1 - result.agreement
    if spec.replay_max_flips is not None and share > spec.replay_max_flips and not backed:
        reasons.append(f"{share:.1%} of {result.rows:,} decisions flipped (at most "
                       f"{spec.replay_max_flips:.1%} unless labels back the change)")  # fmt: skip
    if spec.replay_max_p99_ms is not None and result.latency_p99_ms > spec.replay_max_p99_ms:
        reasons.append(f"p99 latency {result.latency_p99_ms:.2f} ms above {spec.replay_max_p99_ms} ms")
    return ("refused" if reasons else "passed"), reasons


def _replay(spec: DeploySpec, project: Project, name: str, version: int, parent: str) -> dict[str, Any]:
    """Replay the candidate on the serving's recent traffic and judge it (jobs/serve/replay.py)."""
    from jobs.serve.replay import ReplaySpec
    from jobs.serve.replay import run as replay

    try:
        result = replay(ReplaySpec(project=project.name, serving=name, candidate=version,
                                   model_name=spec.model_name, since_hours=spec.replay_hours or 24.0,
                                   parent_run_id=parent))  # fmt: skip
    except NotFoundError as exc:  # no traffic yet: nothing to judge on, the static gate decides
        return {"decision": "no traffic", "reasons": [exc.one_line()], "run_id": None}
    decision, reasons = replay_verdict(result, spec)
    return {
        "decision": decision, "reasons": reasons, "run_id": result.run_id, "uri": result.uri,
        "rows": result.rows, "agreement": result.agreement, "flips": result.flips, "psi": result.psi,
        "latency_p99_ms": result.latency_p99_ms, "labelled": result.labelled,
        "auc_difference": result.auc_difference, "auc_difference_ci": result.auc_difference_ci,
    }  # fmt: skip


def _smoke(serving_name: str, version: int, project: str, x: Any) -> None:
    rows = x.head(3).astype("float32")
    instances = [{k: float(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]
    answer = serving.predict(serving_name, {"instances": instances}, project=project, version=version)
    predictions = answer["predictions"]
    values = [next(iter(p.values())) if isinstance(p, dict) else p for p in predictions]
    if len(values) != len(instances) or not all(isinstance(v, float) and math.isfinite(v) for v in values):
        raise DeployError(f"the smoke request to v{version} answered {answer}")


def run(spec: DeploySpec) -> DeployResult:
    """Bless, deploy, wait, smoke-test, move the champion; :class:`DeployRejected` when not blessed."""
    project = get_project(spec.project)
    name = spec.serving or spec.model_name
    client = mlflow_client(tracking_uri())
    version = spec.version or _version_of(client, spec.model_name, CANDIDATE)
    if version is None:
        raise DeployError(
            f"model {spec.model_name} has no {CANDIDATE}", hint="train one: python -m jobs.train.main"
        )
    if not project.fs.is_published(f"Models/{spec.model_name}/{version}"):
        raise NotFoundError(f"model {spec.model_name} has no published version {version} in {project.name}")
    champion = _version_of(client, spec.model_name, CHAMPION)
    serving.recover_deploy(name, project=project.name)  # a deploy killed mid-way is undone first
    previous = (
        serving.get_serving(name, project=project.name)
        if serving.exists(name, project=project.name)
        else None
    )
    model_uri = project.fs.uri(f"Models/{spec.model_name}/{version}")  # as the training job records it
    with track_run(
        project, "deploy", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
    ) as record:
        record.add_input(model_uri, str(version), kind="model")
        x, y = _held_out(project, client, spec.model_name, version)
        candidate_auc = _auc(project, spec.model_name, version, x, y)
        champion_auc = (
            _auc(project, spec.model_name, champion, x, y) if champion not in (None, version) else None
        )
        blessed = champion_auc is None or (candidate_auc or 0) >= champion_auc - spec.tolerance
        decision = "blessed" if blessed else ("forced" if spec.force else "rejected")
        blessing: dict[str, Any] = {
            "metric": "roc_auc", "candidate": candidate_auc, "champion": champion_auc,
            "champion_version": champion, "tolerance": spec.tolerance, "decision": decision,
            "rows": len(y),
        }  # fmt: skip
        record.params["blessing"] = blessing
        for key, value in blessing.items():
            client.set_model_version_tag(spec.model_name, str(version), f"fjord.blessing.{key}", str(value))
        if spec.replay_hours and previous is not None and decision != "rejected":
            blessing["replay"] = _replay(spec, project, name, version, record.run_id)
            record.params["blessing"] = blessing
            for key in ("decision", "reasons", "run_id"):
                value = blessing["replay"].get(key)
                client.set_model_version_tag(spec.model_name, str(version), f"fjord.replay.{key}", str(value))
            if blessing["replay"]["decision"] == "refused":
                decision = blessing["decision"] = "forced" if spec.force else "rejected"
                if decision == "rejected":
                    client.set_model_version_tag(spec.model_name, str(version), "fjord.blessing.decision",
                                                 decision)  # fmt: skip
                    raise DeployRejected(
                        f"{spec.model_name} v{version} not deployed: on replayed traffic of {name}, "
                        + "; ".join(blessing["replay"]["reasons"]),
                        hint=f"the replay: {blessing['replay'].get('uri')}; --force deploys it anyway",
                    )
        if decision == "rejected":
            raise DeployRejected(
                f"{spec.model_name} v{version} not deployed: ROC AUC {auc_text(candidate_auc)} on {len(y):,} "
                f"held-out rows is below champion v{champion}'s {auc_text(champion_auc)} by more than "
                f"{spec.tolerance}",
                hint="--force deploys it anyway",
            )
        if spec.bless_only:
            return DeployResult(
                record.run_id, name, spec.model_name, version, "", None, blessing, "", "", deployed=False
            )
        label = serving.CANARY if spec.canary else serving.SHADOW if spec.shadow else serving.STABLE
        passthrough = spec.passthrough
        if passthrough is None:
            passthrough = previous.passthrough if previous else []
        if fed := sorted(set(passthrough) & set(x.columns)):
            raise DeployError(f"passthrough field {fed[0]} is an input of {spec.model_name} v{version}: "
                              "a passthrough field is never fed to the model")  # fmt: skip
        if spec.feature_view:
            from jobs.features.job import ensure_view

            ensure_view(project.name, spec.feature_view)
        serving.begin_deploy(name, previous, project=project.name)
        updated = serving.create_or_update(
            name, version, project=project.name, model_name=spec.model_name, label=label,
            inference_logging=spec.inference_logging,
            feature_view=spec.feature_view or (previous.feature_view if previous else None),
            transformer=spec.transformer or (previous.transformer if previous else None),
            input_rules=spec.input_rules or (previous.input_rules if previous else None),
            input_rules_mode=spec.input_rules_mode or (previous.input_rules_mode if previous else "reject"),
            passthrough=passthrough,
            canary_percent=spec.canary_percent if spec.canary else None,
            canary_key=spec.canary_key if spec.canary else None,
        )  # fmt: skip
        crash_point("deploy.configured")
        try:
            url = serving.start(project=project.name)
            serving.wait_available(name, version, project=project.name, timeout_s=spec.timeout_s)
            _smoke(name, version, project.name, x)
        except BaseException:
            serving.restore(name, previous, project=project.name)  # as it was, or gone if it was new
            serving.end_deploy(name, project=project.name)
            raise
        if label == serving.STABLE:
            client.set_registered_model_alias(spec.model_name, CHAMPION, str(version))
        serving.end_deploy(name, project=project.name)
        record.add_output(serving.serving_uri(project.name, name), str(version), kind="deployment")
        return DeployResult(
            record.run_id, name, spec.model_name, version, label,
            previous.labels.get(serving.STABLE) if previous else None, blessing, url, updated.topic,
        )  # fmt: skip


ROLLBACK_LABEL = "rollback"  # the version a rollback loads, before stable points at it


def auc_text(auc: float | None) -> str:
    """An AUC as the gate reports it (None: the version reads features the held-out rows lack)."""
    return f"{auc:.4f}" if auc is not None else "not measurable (the version reads other features)"


def rollback(spec: RollbackSpec) -> DeployResult:
    """Point ``stable`` back at the version deployed before the current one."""
    project = get_project(spec.project)
    current = serving.get_serving(spec.serving, project=project.name)
    history = [v for v in current.history if v != current.labels.get(serving.STABLE)]
    if not history:
        raise DeployError(f"serving {spec.serving} has no earlier version to roll back to")
    target = history[-1]
    client = mlflow_client(tracking_uri())
    with track_run(
        project, "rollback", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
    ) as record:
        record.add_input(project.fs.uri(f"Models/{current.model_name}/{target}"), str(target), kind="model")
        labels = {**current.labels, serving.STABLE: target}
        history = current.history[: len(current.history) - current.history[::-1].index(target)]
        # The target loads beside the current versions first (under a label of its own); ``stable``
        # moves only once it is available, so a version that fails to load never takes the traffic.
        loading = {**current.labels, ROLLBACK_LABEL: target}
        serving.set_labels(spec.serving, loading, project=project.name, history=current.history)
        try:
            url = serving.start(project=project.name)
            serving.wait_available(spec.serving, target, project=project.name)
        except BaseException:
            serving.restore(spec.serving, current, project=project.name)
            raise
        serving.set_labels(spec.serving, labels, project=project.name, history=history)
        client.set_registered_model_alias(current.model_name, CHAMPION, str(target))
        record.add_output(
            project.fs.uri(f"{serving.SERVING_DIR}/{spec.serving}"), str(target), kind="deployment"
        )
        return DeployResult(
            record.run_id, spec.serving, current.model_name, target, serving.STABLE,
            current.labels.get(serving.STABLE), {"decision": "rollback", "tolerance": 0}, url, current.topic,
        )  # fmt: skip
