"""A monitored model for the monitor's tests: its training dataset (with reference statistics) in the
feature store, and versions whose lineage points at it, as the training job records them; and
inference log records sent through the model server's own logger."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

import featurestore
from fjord.lineage import track_run
from fjord.projects import Project, create_project
from jobs.serve.inference_log import InferenceLogger
from jobs.serve.metrics import Metrics

MODEL = "m"


def monitored_project(
    name: str = "mon", versions: tuple[int, ...] = (1, 2), extra_features: int = 0,
    files: dict[int, Path] | None = None,
) -> Project:  # fmt: skip
    """Project ``name`` with training dataset m_view_1 v1 (x ~ N(0, 1), y in 0..9, and
    ``extra_features`` more, f1.. ~ N(0, 1)) and model ``m`` versions trained on it (with the
    SavedModel of ``files[version]``, where given: a version the model server can load)."""
    project = create_project(name)
    store = featurestore.connect(name)
    rng = np.random.default_rng(3)
    n = 5_000
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
            "x": rng.normal(0, 1, n),
            "y": rng.integers(0, 10, n).astype("float64"),
            "label": rng.integers(0, 2, n),
            **{f"f{i}": rng.normal(0, 1, n) for i in range(1, extra_features + 1)},
        }
    )
    features = ["x", "y", *(f"f{i}" for i in range(1, extra_features + 1))]
    group = store.get_or_create_feature_group("m_inputs", 1, primary_key=["id"], event_time="ts")
    group.insert(frame)
    view = store.get_or_create_feature_view(
        "m_view", 1, query=group.select([*features, "label"]), labels=["label"]
    )
    dataset, _ = view.create_training_data()
    for version in versions:
        with track_run(project, "train", params={"feature_view": "m_view", "feature_view_version": 1}) as run:
            run.add_input(view.training_dataset_uri(dataset), str(dataset), kind="training_dataset")
        with project.fs.publish(f"Models/{MODEL}/{version}", overwrite=True) as out:
            local = (files or {}).get(version)
            for path in (
                sorted(p for p in local.rglob("*") if p.is_file() and p.name != "_SUCCESS") if local else []
            ):
                out.upload(str(path), path.relative_to(local).as_posix())
            out.write_text("fjord-model.json", json.dumps({"run_id": run.run_id}))
    return project


class Traffic:
    """Calls of model ``m`` as the model server logs them (its InferenceLogger, mode ALL)."""

    def __init__(self, topic: str, bootstrap: str) -> None:
        self.logger = InferenceLogger("ALL", lambda _model: topic, Metrics(), bootstrap_servers=bootstrap)
        self.rng = np.random.default_rng(5)

    def call(self, version: int, rows: int = 4, *, shift: float = 0.0, started: float | None = None,
             error: bool = False) -> None:  # fmt: skip
        x = self.rng.normal(shift, 1, rows).astype("float32")
        y = self.rng.integers(0, 10, rows).astype("float32")
        outputs = None if error else {"sum": (x + y) / 20, "diff": x - y}
        self.logger.log(
            uuid.uuid4().hex, MODEL, version, "serving_default", "rest", started or time.time(),
            {"x": x, "y": y}, outputs, 500 if error else 200, "boom" if error else None,
        )  # fmt: skip

    def close(self) -> None:
        self.logger.close()


def archive_calls(
    project: Project, model: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
    tids: np.ndarray, *, at_ms: int, per_call: int = 4, version: int = 1,
) -> None:  # fmt: skip
    """Calls of ``per_call`` rows served by ``version`` of ``model`` (their request and response
    records, the rows' ``tid`` passed through), in the inference archive as the monitor writes it."""
    import orjson
    import pyarrow as pa

    from jobs.monitor import stream
    from jobs.monitor.archive import InferenceArchive

    rows = []
    for start in range(0, len(tids), per_call):
        part = slice(start, start + per_call)
        head = {"inferenceId": uuid.uuid4().hex, "modelName": model, "modelVersion": version,
                "requestTimestamp": at_ms + start, "passthrough": {"tid": tids[part].tolist()}}  # fmt: skip
        request = {**head, "type": "request", "inputs": {k: v[part].tolist() for k, v in inputs.items()}}
        response = {**head, "type": "response", "httpCode": 200, "latencyMs": 1.0,
                    "outputs": {k: v[part].tolist() for k, v in outputs.items()}}  # fmt: skip
        for record in (request, response):
            fields = (record["inferenceId"], record["type"], model, version, "rest",
                      record["requestTimestamp"], record.get("httpCode"), record.get("latencyMs"),
                      orjson.dumps(record).decode(), "t", 0, len(rows))  # fmt: skip
            rows.append(dict(zip(stream.ARCHIVED, fields, strict=True)))
    table = pa.Table.from_pylist(rows).cast(pa.schema([stream.OUTPUT.field(n) for n in stream.ARCHIVED]))
    InferenceArchive(project.fs, model).append(table, "test", 0)
