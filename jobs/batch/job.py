"""Batch inference: the feature view's batch data in a window, scored by one model version.

The model is the version the alias (``champion``) points at unless ``--version`` names one; the
features are read at each group's latest commit, and those commits are recorded. The scores are
published atomically as a new version of ``Resources/predictions/<model>/`` with the rows' keys and
event times, the model version and the score. A rerun of the same model version, window and commits
returns the version it published before (a scheduler's retry adds nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

import featurestore
from fjord.errors import FjordError, NotFoundError
from fjord.experiment.tracking import client as mlflow_client
from fjord.experiment.tracking import tracking_uri
from fjord.fs import SharedFS
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.projects import get_project

PREDICTIONS = "Resources/predictions"
SCORE = "fraud_probability"
_CODE = [Path(__file__).parent]


class BatchInferenceError(FjordError):
    """The batch cannot be scored as specified (no such model version or view, an empty window)."""

    exit_code = 2


class BatchInferenceSpec(JobSpec):
    project: str
    model_name: str = "fraud"
    alias: str = Field(default="champion", description="the registered model alias to score with")
    version: int | None = Field(default=None, ge=1, description="a model version instead of the alias")
    feature_view: str = "fraud_demo"
    feature_view_version: int = Field(default=1, ge=1)
    start_time: datetime | None = Field(default=None, description="rows at or after this event time")
    end_time: datetime | None = Field(default=None, description="rows before this event time")


@dataclass
class BatchInferenceResult:
    run_id: str
    model_name: str
    model_version: int
    dataset_version: int
    uri: str
    rows: int
    mean_score: float
    commits: dict[str, int]
    reused: bool

    def summary(self) -> str:
        again = " (already scored: unchanged)" if self.reused else ""
        return (
            f"scored {self.rows:,} rows with {self.model_name} v{self.model_version}: predictions "
            f"v{self.dataset_version}{again}, mean score {self.mean_score:.4f}, from commits "
            f"{self.commits}; {self.uri}"
        )


def _model_version(spec: BatchInferenceSpec) -> int:
    if spec.version is not None:
        return spec.version
    from mlflow.exceptions import MlflowException

    try:
        return int(
            mlflow_client(tracking_uri()).get_model_version_by_alias(spec.model_name, spec.alias).version
        )
    except MlflowException:
        raise BatchInferenceError(
            f"model {spec.model_name} has no {spec.alias!r} version", hint="deploy one first"
        ) from None


def _existing(project_fs: SharedFS, root: str, key: str) -> int | None:
    """The published version whose inputs hash to ``key``, if any."""
    if not project_fs.exists(root):
        return None
    for name in project_fs.listdir(root):
        if name.isdigit() and project_fs.is_published(f"{root}/{name}"):
            meta = json.loads(project_fs.read_text(f"{root}/{name}/_inputs.json"))
            if meta.get("key") == key:
                return int(name)
    return None


def run(spec: BatchInferenceSpec) -> BatchInferenceResult:
    """Score the window; :class:`BatchInferenceError` on bad input."""
    project = get_project(spec.project)
    version = _model_version(spec)
    model_rel = f"Models/{spec.model_name}/{version}"
    if not project.fs.is_published(model_rel):
        raise NotFoundError(f"model {spec.model_name} has no published version {version} in {project.name}")
    store = featurestore.connect(project.name)
    try:
        view = store.get_feature_view(spec.feature_view, spec.feature_view_version)
    except NotFoundError as exc:
        raise BatchInferenceError(str(exc), hint="create it with the features job") from None
    commits = view.latest_commits()
    window = [t.isoformat() if t else None for t in (spec.start_time, spec.end_time)]
    inputs = {"model": f"{spec.model_name}/{version}", "window": window, "commits": commits}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    root = f"{PREDICTIONS}/{spec.model_name}"
    with track_run(
        project, "batch_inference", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
    ) as record:
        record.add_input(project.fs.uri(model_rel), str(version), kind="model")
        for group in view.query.groups():
            record.add_input(group.location, str(commits[group.ref]), kind="feature_group")
        reused = _existing(project.fs, root, key)
        frame = view.get_batch_data(spec.start_time, spec.end_time, commits=commits)
        if frame.empty:
            raise BatchInferenceError(f"feature view {view.name} v{view.version} has no rows in {window}")
        if reused is None:
            scores, names = _score(project.fs, model_rel, frame)
            keys = [c for c in frame.columns if c not in names]
            table = pa.Table.from_pandas(frame[keys].assign(model_version=version, **{SCORE: scores}),
                                         preserve_index=False)  # fmt: skip
            dataset = _next_version(project.fs, root)
            with project.fs.publish(f"{root}/{dataset}") as out:
                buffer = io.BytesIO()
                pq.write_table(table, buffer)
                out.write_bytes("predictions.parquet", buffer.getvalue())
                out.write_text("_inputs.json", json.dumps({"key": key, **inputs}, indent=2))
            rate = float(scores.mean())
        else:
            dataset = reused
            table = project.fs.read_parquet(f"{root}/{dataset}/predictions.parquet", columns=[SCORE])
            rate = float(table.column(SCORE).to_numpy().mean())
        uri = project.fs.uri(f"{root}/{dataset}")
        record.add_output(uri, str(dataset), kind="predictions")
        return BatchInferenceResult(
            record.run_id,
            spec.model_name,
            version,
            dataset,
            uri,
            len(frame),
            rate,
            commits,
            reused is not None,
        )


def _score(fs: SharedFS, model_rel: str, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The model's scores of ``frame`` (its SavedModel, on its own signature's inputs), and those inputs."""
    from jobs.serve.backends import read_signature_defs, signatures_of
    from jobs.train.model import predict_saved_model

    with tempfile.TemporaryDirectory(prefix="fjord-batch-") as tmp:
        local = Path(tmp) / "model"
        fs.download(model_rel, local)
        names = sorted(signatures_of(read_signature_defs(local))["serving_default"].inputs)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise BatchInferenceError(f"the feature view lacks the model's inputs {missing}")
        return predict_saved_model(local, frame[names]), names


def _next_version(fs: SharedFS, root: str) -> int:
    taken = [int(n) for n in fs.listdir(root) if n.isdigit()] if fs.exists(root) else []
    return max(taken, default=0) + 1
