"""Registers a model as ``python -m tests.integration.register_worker NAME RUN_ID [KIND]``, as the
training job does (``jobs.train.job._register``, inside a train run record on training dataset v1 of
fraud_demo), so the deploy job can bless it; FJORD_CRASH_AT says where to die. Prints the version."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import tensorflow as tf

from fjord.experiment.tracking import tracking_uri
from fjord.lineage import track_run
from fjord.projects import get_project
from jobs.train.job import TrainSpec, _register


class Constant(tf.Module):
    """0.5 for every transaction."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="amount")])
    def serve(self, amount):
        return {"fraud_probability": amount * 0 + 0.5}


class EveryTwentieth(tf.Module):
    """1 for an amount that is a multiple of 20 (the fraud of the tests' training data), else 0."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="amount")])
    def serve(self, amount):
        return {"fraud_probability": tf.cast(tf.math.floormod(amount, 20.0) == 0.0, tf.float32)}


KINDS = {"constant": Constant, "every_20th": EveryTwentieth}


def main(name: str, run_id: str, kind: str = "constant") -> None:
    module = KINDS[kind]()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        tf.saved_model.save(module, str(model), signatures={"serving_default": module.serve})
        uri = tracking_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(name)
        with mlflow.start_run() as trial:
            pass
        spec = TrainSpec(project="fraud", model_name=name, run_id=run_id)
        project = get_project("fraud")
        with track_run(project, "train", params=spec.model_dump(mode="json"), run_id=run_id):
            version, _ = _register(spec, project, model, trial.info.run_id, uri, run_id, 1,
                                   {"roc_auc": 0.9}, None, {}, pd.DataFrame({"amount": [1.0]}))  # fmt: skip
    print(version)


if __name__ == "__main__":
    main(*sys.argv[1:])
