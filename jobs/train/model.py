"""The fraud model: data from the feature view, a Keras network, its metrics and its SavedModel.

:func:`train_trial` is the plain training function the experiment API runs on executors: it reads
the training dataset through the feature store's public API, trains on the earlier part of the
training split, reports validation ROC AUC per epoch (so a search can stop it early) and returns its
metrics. With ``export=True`` it also writes the serving SavedModel and its evaluation inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: no CUDA/oneDNN banners
import keras
import numpy as np
import pandas as pd

import featurestore
from fjord import experiment
from jobs.train.splits import validation_cut

OUTPUT = "fraud_probability"


@dataclass
class Splits:
    """Time-ordered splits: train < validation < test (no look-ahead)."""

    features: list[str]
    label: str
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    x_test: pd.DataFrame
    y_test: np.ndarray


def load_splits(
    project: str, view: str, view_version: int, dataset_version: int, test_size: float, val_size: float
) -> Splits:
    """The training dataset's time-ordered splits: the last ``test_size`` is held out for the final
    evaluation, and the last ``val_size`` of the rest is the search's validation set."""
    fv = featurestore.connect(project).get_feature_view(view, view_version)
    x_rest, x_test, y_rest, y_test = fv.train_test_split(
        test_size, time_ordered=True, training_dataset_version=dataset_version
    )
    cut = validation_cut(len(x_rest), val_size)
    label = fv.labels[0]
    numeric = [c for c in x_rest.columns if pd.api.types.is_numeric_dtype(x_rest[c])]
    as_float = lambda frame: frame[numeric].astype("float32")  # noqa: E731 - one expression, used thrice
    return Splits(
        features=numeric,
        label=label,
        x_train=as_float(x_rest.iloc[:cut]),
        y_train=y_rest[label].to_numpy()[:cut].astype("float32"),
        x_val=as_float(x_rest.iloc[cut:]),
        y_val=y_rest[label].to_numpy()[cut:].astype("float32"),
        x_test=as_float(x_test),
        y_test=y_test[label].to_numpy().astype("float32"),
    )


def build_model(features: list[str], x_train: pd.DataFrame, units: int, dropout: float, lr: float) -> Any:
    """Named scalar inputs -> missing values filled with the training mean -> normalised with the
    training statistics -> two dense layers -> fraud probability."""
    means = np.nan_to_num(np.nanmean(x_train.to_numpy(), axis=0)).astype("float32")
    filled = np.where(np.isnan(x_train.to_numpy()), means, x_train.to_numpy())
    variances = np.maximum(filled.var(axis=0), 1e-6).astype("float32")

    inputs = {name: keras.Input(shape=(), name=name, dtype="float32") for name in features}
    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(inputs[name]) for name in features])
    x = FillMissing(means)(x)
    x = keras.layers.Normalization(mean=means, variance=variances)(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(max(units // 2, 4), activation="relu")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT)(x)
    model = keras.Model(inputs, output)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


@keras.saving.register_keras_serializable(package="fjord")
class FillMissing(keras.layers.Layer):
    """NaN (a missing feature: no previous transaction, say) becomes the training mean."""

    def __init__(self, means: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.means = np.asarray(means, dtype="float32")

    def call(self, x: Any) -> Any:
        return keras.ops.where(keras.ops.isnan(x), keras.ops.convert_to_tensor(self.means), x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "means": self.means.tolist()}


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights: the rare fraud class counts as much as the legitimate one in the loss."""
    positives = max(float(y.sum()), 1.0)
    negatives = max(float(len(y) - y.sum()), 1.0)
    return {0: len(y) / (2 * negatives), 1: len(y) / (2 * positives)}


def as_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy(dtype="float32") for name in frame.columns}


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")


def train_trial(
    lr: float,
    units: int,
    dropout: float,
    *,
    project: str,
    view: str,
    view_version: int,
    dataset_version: int,
    epochs: int = 8,
    batch_size: int = 512,
    test_size: float = 0.2,
    val_size: float = 0.2,
    export: bool = False,
) -> dict[str, float]:
    """Train one configuration on the training split; validation ROC AUC reported every epoch."""
    splits = load_splits(project, view, view_version, dataset_version, test_size, val_size)
    model = build_model(splits.features, splits.x_train, int(units), float(dropout), float(lr))
    val_inputs = as_inputs(splits.x_val)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(experiment.tensorboard_dir()))

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            scores = self.model.predict(val_inputs, batch_size=4096, verbose=0).ravel()
            experiment.report(epoch, {"val_auc": roc_auc(splits.y_val, scores), "loss": (logs or {})["loss"]})

    history = model.fit(
        as_inputs(splits.x_train),
        splits.y_train,
        epochs=int(epochs),
        batch_size=int(batch_size),
        class_weight=class_weights(splits.y_train),
        callbacks=[Report(), tensorboard],
        verbose=0,
    )
    val_scores = model.predict(val_inputs, batch_size=4096, verbose=0).ravel()
    metrics = {"val_auc": roc_auc(splits.y_val, val_scores), "loss": float(history.history["loss"][-1])}
    if export:
        out = experiment.trial_dir()
        calibration = fit_calibration(splits.y_val, val_scores)
        export_saved_model(model, splits.features, out / "model", calibration)
        np.save(out / "val_scores.npy", calibrate(val_scores, calibration))
        (out / "features.json").write_text(json.dumps(splits.features))
    return metrics


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_calibration(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Platt scaling ``(a, b)`` fitted on the validation set: ``sigmoid(a * logit(score) + b)`` is a
    probability at the data's real fraud rate. Class weighting trains the network as if fraud were
    as common as the rest, so its raw scores overstate the risk."""
    from sklearn.linear_model import LogisticRegression

    if not 0 < y.sum() < len(y):
        return 1.0, 0.0  # one class only: nothing to fit
    fitted = LogisticRegression(C=1e6).fit(_logit(scores).reshape(-1, 1), y)
    return float(fitted.coef_[0][0]), float(fitted.intercept_[0])


def calibrate(scores: np.ndarray, calibration: tuple[float, float]) -> np.ndarray:
    a, b = calibration
    return (1 / (1 + np.exp(-(a * _logit(scores) + b)))).astype("float32")


def export_saved_model(
    model: Any, features: list[str], path: Path, calibration: tuple[float, float] = (1.0, 0.0)
) -> None:
    """A SavedModel whose ``serving_default`` signature takes the named raw features (float32, one
    value per row) and returns ``fraud_probability``, calibrated: what TensorFlow Serving's REST API
    calls."""
    import tensorflow as tf

    a, b = calibration

    def serve(inputs: dict[str, Any]) -> dict[str, Any]:
        score = tf.clip_by_value(tf.reshape(model(inputs, training=False), [-1]), 1e-7, 1 - 1e-7)
        return {OUTPUT: tf.sigmoid(a * tf.math.log(score / (1 - score)) + b)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[{name: tf.TensorSpec([None], tf.float32, name=name) for name in features}],
    )
    archive.write_out(str(path), verbose=False)


def evaluate(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, precision and recall at ``threshold``, and calibration (Brier score and the
    expected calibration error over 10 bins)."""
    from sklearn.metrics import average_precision_score, brier_score_loss

    predicted = scores >= threshold
    true_positives = float((predicted & (y == 1)).sum())
    bins = np.minimum((scores * 10).astype(int), 9)
    ece = sum(
        abs(float(scores[bins == b].mean()) - float(y[bins == b].mean())) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    return {
        "roc_auc": roc_auc(y, scores),
        "pr_auc": float(average_precision_score(y, scores)) if y.sum() else float("nan"),
        "precision": true_positives / max(float(predicted.sum()), 1.0),
        "recall": true_positives / max(float(y.sum()), 1.0),
        "threshold": float(threshold),
        "brier": float(brier_score_loss(y, scores)),
        "ece": float(ece),
    }


def best_f1_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the best F1 on ``(y, scores)`` (the validation set)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.nanargmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best]) if len(thresholds) else 0.5


def predict_saved_model(path: Path, frame: pd.DataFrame) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = {name: tf.constant(frame[name].to_numpy(dtype="float32")) for name in frame.columns}
    return np.asarray(serve(**inputs)[OUTPUT])
