"""The canary rule: promote a serving's canary to stable, or roll it back, on what it did in production.

``run(CanarySpec(project="fraud", serving="fraud"))`` reads the monitor's windows of the canary and of
the stable version since the canary started (``fjord model deploy --canary``), and the realized
performance where labels have landed, and decides:

- **none** when the serving has no canary (an hourly run, mostly): nothing recorded or changed;
- **wait** while the canary has answered (or failed) fewer than ``min_requests`` calls;
- **rollback** if any rule fails: its error rate above stable's by more than ``max_error_increase``;
  its p99 latency above ``max_p99_ratio`` times stable's (and above ``min_p99_ms``); its estimated
  ROC AUC (CBPE, from its scores) below stable's by more than ``auc_tolerance``; its realized ROC AUC,
  over at least ``min_labelled`` labelled rows, below stable's by more than ``auc_tolerance``;
- **promote** otherwise: the canary becomes ``stable`` (and the MLflow ``champion``).

A canary's failures never reach a client (stable answers them: jobs/serve/routing.py), but they are
logged as the canary's, so its error rate is what the rule sees. The decision, its figures and
reasons go to the run record (stage ``canary``: inputs both versions, output the serving's new
stable version); a promotion moves the MLflow alias ``champion`` too. The serving's files change
in one journaled step after the decision: a run killed before it leaves them as they were, one
killed during it is undone by the next deploy or canary run (:func:`jobs.serve.serving.recover_deploy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.projects import get_project
from jobs.serve import serving
from jobs.serve.routing import CANARY, STABLE

_CODE = [Path(__file__).parent]


class CanarySpec(JobSpec):
    project: str
    serving: str = "fraud"
    min_requests: int = Field(default=500, ge=1, description="calls the canary needs before a decision")
    max_error_increase: float = Field(default=0.01, ge=0, le=1, description="error rate above stable's")
    max_p99_ratio: float = Field(default=1.5, ge=1, description="p99 latency, as a multiple of stable's")
    min_p99_ms: float = Field(default=5.0, ge=0, description="a p99 below this never fails the rule")
    auc_tolerance: float = Field(default=0.02, ge=0, le=1, description="ROC AUC below stable's")
    min_labelled: int = Field(default=200, ge=1, description="labelled rows the realized AUC rule needs")
    dry_run: bool = Field(default=False, description="decide and record, change nothing")


@dataclass
class Figures:
    """What one version did since the canary started."""

    version: int
    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    estimated_roc_auc: float | None = None
    realized_roc_auc: float | None = None
    labelled: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class CanaryResult:
    run_id: str
    serving: str
    decision: str  # none (no canary) | wait | promote | rollback
    canary: Figures
    stable: Figures
    reasons: list[str] = field(default_factory=list)
    applied: bool = False
    since: str = ""

    def summary(self) -> str:
        if self.decision == "none":
            return f"serving {self.serving}: no canary to decide on (fjord model deploy MODEL --canary)"
        c, s = self.canary, self.stable
        figures = (f"canary v{c.version}: {c.requests:,} calls, {c.error_rate:.2%} errors, "
                   f"p99 {_ms(c.p99_ms)}; stable v{s.version}: {s.requests:,} calls, "
                   f"{s.error_rate:.2%} errors, p99 {_ms(s.p99_ms)}")  # fmt: skip
        verb = {"wait": "waits", "promote": "promoted to stable", "rollback": "rolled back"}[self.decision]
        done = "" if self.applied or self.decision == "wait" else " (dry run: nothing changed)"
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"serving {self.serving}: canary v{c.version} {verb}{done}{why} ({figures})"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "canary": {**asdict(self.canary), "error_rate": self.canary.error_rate},
                "stable": {**asdict(self.stable), "error_rate": self.stable.error_rate}}  # fmt: skip


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "n/a"


def figures(project: str, model: str, version: int, since: datetime) -> Figures:
    """``version``'s figures in the monitor's windows that end after ``since``
    (:func:`jobs.monitor.store.version_summary`)."""
    from jobs.monitor.store import MonitorStore, version_summary

    store = MonitorStore(get_project(project).fs, model)
    found = version_summary(store.windows(), store.performance(), model, version, since)
    return Figures(version, found["requests"], found["errors"], found["p99_ms"], found["estimated_roc_auc"],
                   found["realized_roc_auc"], found["labelled"])  # fmt: skip


def verdict(canary: Figures, stable: Figures, spec: CanarySpec) -> tuple[str, list[str]]:
    """The rule: ("wait" | "promote" | "rollback", the reasons)."""
    if canary.requests < spec.min_requests:
        return "wait", [f"{canary.requests:,} of the {spec.min_requests:,} calls a decision needs"]
    reasons = []
    if canary.error_rate > stable.error_rate + spec.max_error_increase:
        reasons.append(f"error rate {canary.error_rate:.2%} against stable's {stable.error_rate:.2%} "
                       f"(at most {spec.max_error_increase:.2%} more)")  # fmt: skip
    slow = canary.p99_ms is not None and stable.p99_ms is not None and canary.p99_ms > spec.min_p99_ms
    if slow and canary.p99_ms > stable.p99_ms * spec.max_p99_ratio:  # type: ignore[operator]
        reasons.append(f"p99 latency {canary.p99_ms:.2f} ms against stable's {stable.p99_ms:.2f} ms "
                       f"(at most {spec.max_p99_ratio}x)")  # fmt: skip
    c, s = canary.estimated_roc_auc, stable.estimated_roc_auc
    if c is not None and s is not None and c < s - spec.auc_tolerance:
        reasons.append(f"estimated ROC AUC {c:.4f} against stable's {s:.4f}")
    if canary.labelled >= spec.min_labelled and stable.labelled >= spec.min_labelled:
        c, s = canary.realized_roc_auc, stable.realized_roc_auc
        if c is not None and s is not None and c < s - spec.auc_tolerance:
            reasons.append(f"realized ROC AUC {c:.4f} on {canary.labelled:,} labelled rows against "
                           f"stable's {s:.4f}")  # fmt: skip
    return ("rollback", reasons) if reasons else ("promote", [])


def run(spec: CanarySpec) -> CanaryResult:
    """Decide on the serving's canary and apply the decision; :class:`CanaryError` without a canary."""
    from fjord.experiment.tracking import client as mlflow_client
    from fjord.experiment.tracking import tracking_uri

    project = get_project(spec.project)
    serving.recover_deploy(spec.serving, project=project.name)  # a deploy or decision killed mid-way
    current = serving.get_serving(spec.serving, project=project.name)
    if CANARY not in current.labels or STABLE not in current.labels:  # an hourly run finds none, mostly
        stable = Figures(current.labels.get(STABLE, 0))
        return CanaryResult(
            "", spec.serving, "none", Figures(0), stable, ["no canary beside a stable version"]
        )
    canary_version, stable_version = current.labels[CANARY], current.labels[STABLE]
    since = datetime.fromtimestamp(current.canary_since or 0, UTC)
    with track_run(
        project, "canary", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
    ) as record:
        for version in (canary_version, stable_version):
            record.add_input(
                project.fs.uri(f"Models/{current.model_name}/{version}"), str(version), kind="model"
            )
        canary = figures(project.name, current.model_name, canary_version, since)
        stable = figures(project.name, current.model_name, stable_version, since)
        decision, reasons = verdict(canary, stable, spec)
        result = CanaryResult(record.run_id, spec.serving, decision, canary, stable, reasons,
                              since=since.isoformat())  # fmt: skip
        record.params["decision"] = result.to_json()
        crash_point("canary.decided")
        if decision == "wait" or spec.dry_run:
            return result
        serving.begin_deploy(spec.serving, current, project=project.name)
        try:
            if decision == "promote":
                labels = {k: v for k, v in current.labels.items() if k != CANARY} | {STABLE: canary_version}
                history = [*current.history, canary_version]
                serving.set_labels(spec.serving, labels, project=project.name, history=history)
                mlflow_client(tracking_uri()).set_registered_model_alias(
                    current.model_name, "champion", str(canary_version)
                )
            else:
                labels = {k: v for k, v in current.labels.items() if k != CANARY}
                serving.set_labels(spec.serving, labels, project=project.name)
        except BaseException:
            serving.restore(spec.serving, current, project=project.name)  # as it was before the decision
            raise
        finally:
            serving.end_deploy(spec.serving, project=project.name)
        served = canary_version if decision == "promote" else stable_version
        record.add_output(serving.serving_uri(project.name, spec.serving), str(served), kind="deployment")
        result.applied = True
        return result
