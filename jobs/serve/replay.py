"""Replay: a candidate judged on the traffic the served versions answered, offline, before it serves.

``run(ReplaySpec(project="fraud", serving="fraud", candidate=2))`` (``fjord model shadow fraud
--candidate 2 --since 24h``):

1. reads the archived requests of the serving in the window (:mod:`jobs.monitor.archive`): each served
   row's exact model inputs (after the online lookup and the transformer) and the served version's
   output for it, with its passthrough key (``tid``); rows the candidate served itself are left out;
2. scores the same rows with the candidate, call by call as the clients sent them, through the model
   server's own backend (``auto``: the TFLite file when the training job kept one, else the
   SavedModel), and times each call;
3. reports, against the served outputs: the decision agreement at each version's serving threshold
   (its card's), the flips listed by inference id (the largest score changes first), the shift of the
   score distribution (PSI over ten quantile bins of the served scores), and the candidate's latency
   per call (p50, p99);
4. where labels have landed for the rows' keys (``fraud_labels`` by ``tid``), the realized ROC AUC of
   both on the same labelled rows, and their difference with a 95% interval from a paired bootstrap
   (the same resampled rows for both);
5. records the replay in the lineage (replay run -> candidate and served versions -> archive
   version) and keeps its result under ``Resources/replay/<serving>/<run id>.json``.

Everything is read at one archive version and one labels commit, so a rerun gives the same figures.
Replay changes no serving: the gate decides on its result (jobs/serve/deploy.py).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from fjord.errors import FjordError, NotFoundError
from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.progress import progress
from fjord.projects import Project, get_project
from jobs.monitor.archive import InferenceArchive, key_text, predictions, requests
from jobs.monitor.reference import load_card

REPLAYS = "Resources/replay"
_CODE = [__file__]


class ReplayError(FjordError):
    """The replay cannot run as asked (a candidate that reads inputs the traffic lacks, a bad window)."""

    exit_code = 2


class ReplaySpec(JobSpec):
    project: str
    serving: str = Field(default="fraud", description="the serving whose archived traffic is replayed")
    candidate: int = Field(ge=1, description="the model version to judge")
    model_name: str | None = Field(default=None, description="the candidate's model (default: the serving's)")
    since_hours: float = Field(default=24.0, gt=0, le=24 * 3650, description="the window: the last N hours")
    start_time: datetime | None = Field(default=None, description="or from this time (inclusive) ...")
    end_time: datetime | None = Field(default=None, description="... to this one (exclusive)")
    output: str | None = Field(default=None, description="the output compared (default: the first)")
    backend: str = Field(default="auto", description="auto, savedmodel or tflite, as the model server")
    labels_group: str = Field(default="fraud_labels", description="labels joined by key, where landed")
    key: str = Field(default="tid", description="the passthrough field the labels are joined on")
    label: str = Field(default="is_fraud")
    bootstrap: int = Field(default=1000, ge=0, le=100_000, description="paired bootstrap resamples")
    seed: int = 0
    flips_listed: int = Field(default=20, ge=0, le=10_000)

    @model_validator(mode="after")
    def _window(self) -> ReplaySpec:
        if self.start_time and self.end_time and self.start_time >= self.end_time:
            raise ValueError("start_time must be before end_time")
        return self

    def window(self) -> tuple[datetime, datetime]:
        end = self.end_time or datetime.now(UTC)
        start = self.start_time or end - timedelta(hours=self.since_hours)
        return start, end


@dataclass
class ReplayResult:
    run_id: str
    serving: str
    model: str
    candidate: int
    served_versions: list[int]
    window: list[str]
    rows: int
    calls: int
    served_threshold: dict[int, float]
    candidate_threshold: float
    agreement: float
    flips: int
    flipped: list[dict[str, Any]]
    psi: float
    latency_p50_ms: float
    latency_p99_ms: float
    labelled: int = 0
    positives: int = 0
    auc_served: float | None = None
    auc_candidate: float | None = None
    auc_difference: float | None = None
    auc_difference_ci: list[float] | None = None
    archive_version: int | None = None
    labels_commit: int | None = None
    uri: str = ""

    def summary(self) -> str:
        head = (f"{self.serving}: candidate v{self.candidate} replayed on {self.rows:,} rows of "
                f"{self.calls:,} calls served by v{', v'.join(map(str, self.served_versions))}: decisions "
                f"agree on {self.agreement:.2%} ({self.flips:,} flipped), score PSI {self.psi:.3f}, "
                f"latency p50 {self.latency_p50_ms:.2f} ms p99 {self.latency_p99_ms:.2f} ms")  # fmt: skip
        if self.auc_difference is None:
            return f"{head}; no labels landed for these rows yet"
        lo, hi = self.auc_difference_ci or [math.nan, math.nan]
        return (f"{head}; on {self.labelled:,} labelled rows ROC AUC {self.auc_candidate:.4f} vs served "
                f"{self.auc_served:.4f}, difference {self.auc_difference:+.4f} "
                f"(95% CI {lo:+.4f} .. {hi:+.4f})")  # fmt: skip


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected``, over the deciles of ``expected``
    (a bin empty on one side counts as 1e-4 of it, as Evidently does)."""
    if not len(expected) or not len(actual):
        return math.nan
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1) / len(expected)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1) / len(actual)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def paired_auc(y: np.ndarray, served: np.ndarray, candidate: np.ndarray, resamples: int,
               seed: int) -> tuple[float, float, float, list[float] | None]:  # fmt: skip
    """(AUC served, AUC candidate, difference, its 95% interval by a paired bootstrap: each resample
    draws the same rows for both models, so what the two share cancels out)."""
    from sklearn.metrics import roc_auc_score

    served_auc, candidate_auc = roc_auc_score(y, served), roc_auc_score(y, candidate)
    differences = []
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        if 0 < y[rows].sum() < len(rows):
            differences.append(roc_auc_score(y[rows], candidate[rows]) - roc_auc_score(y[rows], served[rows]))
    interval = (
        [float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))]
        if differences
        else None
    )
    return float(served_auc), float(candidate_auc), float(candidate_auc - served_auc), interval


def _threshold(project: Project, model: str, version: int) -> float:
    card = load_card(project, model, version) or {}
    return float((card.get("metrics") or {}).get("threshold", 0.5))


def _traffic(spec: ReplaySpec, archive: InferenceArchive, as_of: int | None) -> Any:
    """One row per served row: inference id, row, version, the key, ``inputs.*`` and ``score``."""
    start, end = spec.window()
    asked = requests(archive, start, end, as_of=as_of)
    answered = predictions(archive, start, end, output=spec.output, as_of=as_of)
    if asked.empty or answered.empty:
        raise NotFoundError(f"no archived traffic of serving {spec.serving} from {start:%Y-%m-%d %H:%M} "
                            f"to {end:%Y-%m-%d %H:%M} UTC",
                            hint="a wider window (--since); is the monitor archiving its log?")  # fmt: skip
    inputs = [c for c in asked.columns if c.startswith("inputs.")]
    rows = answered[
        ["inference_id", "row", "version", "score", *[c for c in answered.columns if c == spec.key]]
    ]
    joined = rows.merge(asked[["inference_id", "row", *inputs]], on=["inference_id", "row"], how="inner")
    joined = joined[joined["version"] != spec.candidate].reset_index(drop=True)
    joined.attrs["output"] = answered.attrs.get("output")
    return joined


def _score(spec: ReplaySpec, local: Path, traffic: Any) -> tuple[np.ndarray, list[float]]:
    """The candidate's output for every row, call by call through the server's backend; each call's
    seconds."""
    from jobs.serve.backends import open_backend, read_signature_defs, signatures_of
    from jobs.serve.tensors import DTYPES

    signature = signatures_of(read_signature_defs(local))["serving_default"]
    missing = [name for name in signature.inputs if f"inputs.{name}" not in traffic.columns]
    if missing:
        raise ReplayError(f"candidate v{spec.candidate} reads {', '.join(sorted(missing))}, which the "
                          f"archived requests of {spec.serving} do not hold")  # fmt: skip
    served = traffic.attrs.get("output")  # the output the served scores are: the same one, by name
    output = spec.output or (served if served in signature.outputs else sorted(signature.outputs)[0])
    if output not in signature.outputs:
        raise ReplayError(f"candidate v{spec.candidate} has no output {output!r} "
                          f"(its outputs: {', '.join(sorted(signature.outputs))})")  # fmt: skip
    backend = open_backend(spec.backend, local, {"serving_default": signature})
    scores = np.full(len(traffic), np.nan)
    seconds = []
    try:
        for _, call in traffic.groupby("inference_id", sort=False):
            feed = {name: call[f"inputs.{name}"].to_numpy("float64").astype(DTYPES[spec.dtype])
                    for name, spec in signature.inputs.items()}  # fmt: skip
            began = time.perf_counter()
            out = backend.run("serving_default", feed)
            seconds.append(time.perf_counter() - began)
            scores[call.index.to_numpy()] = np.asarray(out[output], dtype="float64").reshape(len(call))
    finally:
        backend.close()
    return scores, seconds


def _labels(spec: ReplaySpec) -> tuple[Any, int | None]:
    """key text -> label of the labels group at its latest commit (empty when it does not exist)."""
    import pandas as pd

    import featurestore

    try:
        group = featurestore.connect(spec.project).get_feature_group(spec.labels_group, 1)
    except NotFoundError:
        return pd.Series(dtype="int64"), None
    frame = group.read(columns=[spec.key, spec.label]).dropna(subset=[spec.label])
    return frame.set_index(frame[spec.key].map(key_text))[spec.label].astype(
        "int64"
    ), group.snapshot().version


def run(spec: ReplaySpec) -> ReplayResult:
    """Replay, measure, record; see the module docstring."""
    project = get_project(spec.project)
    model = spec.model_name or _serving_model(spec)
    if not project.fs.exists(f"Models/{model}/{spec.candidate}"):
        raise NotFoundError(f"model {model} has no version {spec.candidate} in {project.fs.uri('Models')}")
    archive = InferenceArchive(project.fs, spec.serving)
    table = archive.table()
    archive_version = table.version() if table is not None else None
    start, end = spec.window()
    with track_run(project, "replay", params=spec.model_dump(mode="json"), code=_CODE,
                   **spec.run_tree()) as record:  # fmt: skip
        traffic = _traffic(spec, archive, archive_version)
        if traffic.empty:
            raise NotFoundError(f"the archived traffic of {spec.serving} in the window was all served by "
                                f"v{spec.candidate} itself: nothing to compare")  # fmt: skip
        progress(f"replay: {len(traffic):,} rows of {traffic['inference_id'].nunique():,} calls")
        with tempfile.TemporaryDirectory(prefix="fjord-replay-") as tmp:
            local = Path(tmp) / "model"
            project.fs.download(f"Models/{model}/{spec.candidate}", local)
            scores, seconds = _score(spec, local, traffic)
        crash_point("replay.scored")  # a kill here: no result kept, no serving touched
        served = traffic["score"].to_numpy("float64")
        versions = sorted(int(v) for v in traffic["version"].unique())
        thresholds = {v: _threshold(project, model, v) for v in versions}
        mine = _threshold(project, model, spec.candidate)
        served_decision = served >= traffic["version"].map(thresholds).to_numpy("float64")
        candidate_decision = scores >= mine
        flipped = np.flatnonzero(served_decision != candidate_decision)
        order = flipped[np.argsort(-np.abs(scores[flipped] - served[flipped]), kind="stable")]
        listed = [
            {"inference_id": traffic["inference_id"].iat[i], "row": int(traffic["row"].iat[i]),
             "version": int(traffic["version"].iat[i]), spec.key: _plain(traffic, spec.key, i),
             "served": round(float(served[i]), 6), "candidate": round(float(scores[i]), 6)}
            for i in order[: spec.flips_listed]
        ]  # fmt: skip
        latencies = np.asarray(seconds) * 1000
        result = ReplayResult(
            run_id=record.run_id, serving=spec.serving, model=model, candidate=spec.candidate,
            served_versions=versions, window=[start.isoformat(), end.isoformat()], rows=len(traffic),
            calls=len(seconds), served_threshold=thresholds, candidate_threshold=mine,
            agreement=float(np.mean(served_decision == candidate_decision)), flips=len(flipped),
            flipped=listed, psi=psi(served, scores), latency_p50_ms=float(np.percentile(latencies, 50)),
            latency_p99_ms=float(np.percentile(latencies, 99)), archive_version=archive_version,
        )  # fmt: skip
        if spec.key in traffic.columns:
            labels, result.labels_commit = _labels(spec)
            y = traffic[spec.key].map(key_text).map(labels).to_numpy("float64")
            known = ~np.isnan(y)
            result.labelled, result.positives = int(known.sum()), int(np.nansum(y))
            if 0 < result.positives < result.labelled:
                auc = paired_auc(
                    y[known].astype("int64"), served[known], scores[known], spec.bootstrap, spec.seed
                )
                result.auc_served, result.auc_candidate, result.auc_difference, result.auc_difference_ci = auc
        record.add_input(archive.uri, str(archive_version), kind="inference_archive")
        record.add_input(
            project.fs.uri(f"Models/{model}/{spec.candidate}"), str(spec.candidate), kind="model"
        )
        for version in versions:
            record.add_input(project.fs.uri(f"Models/{model}/{version}"), str(version), kind="model")
        rel = f"{REPLAYS}/{spec.serving}/{record.run_id}"
        result.uri = project.fs.uri(f"{rel}/replay.json")
        with project.fs.publish(rel, overwrite=True) as out:
            out.write_text("replay.json", json.dumps(asdict(result), indent=2, default=str))
        record.add_output(project.fs.uri(rel), record.run_id, kind="replay")
        return result


def _plain(traffic: Any, column: str, i: int) -> Any:
    if column not in traffic.columns:
        return None
    value = traffic[column].iat[i]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _serving_model(spec: ReplaySpec) -> str:
    from jobs.serve import serving

    try:
        return serving.get_serving(spec.serving, project=spec.project).model_name
    except FjordError:
        return spec.serving
