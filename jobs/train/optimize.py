"""Model optimization: an inference-optimized copy of the SavedModel, kept only if it is as good.

The candidate is the serving signature converted to TensorFlow Lite: variables frozen into
constants, training-only parts (optimizer, gradients, dropout) stripped, ops fused; with
``quantize`` its weights are also quantized to 8 bits (post-training dynamic-range quantization).
Both models are measured on the held-out set: ROC AUC, and latency of one-row predictions. The
candidate is kept (``model.tflite`` beside the SavedModel) only if the AUC drops by less than
``tolerance``; the decision and both figures are returned for the run record.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.train.model import OUTPUT, predict_saved_model, roc_auc

TFLITE_FILE = "model.tflite"
LATENCY_ROWS = 200


def convert(saved_model: Path, quantize: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


def _interpreter(model: bytes) -> Any:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(model_content=model, num_threads=1)


def predict_tflite(model: bytes, frame: pd.DataFrame) -> np.ndarray:
    runner = _interpreter(model).get_signature_runner("serving_default")
    inputs = {name: frame[name].to_numpy(dtype="float32") for name in frame.columns}
    scores = []
    for start in range(0, len(frame), 4096):  # fixed-size input tensors are resized per batch
        batch = {name: values[start : start + 4096] for name, values in inputs.items()}
        scores.append(np.asarray(runner(**batch)[OUTPUT]))
    return np.concatenate(scores) if scores else np.empty(0, dtype="float32")


def _median_ms(predict_one: Any, rows: list[dict[str, np.ndarray]]) -> float:
    predict_one(rows[0])  # warm-up: the first call traces or allocates
    timings = []
    for row in rows:
        start = time.perf_counter()
        predict_one(row)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def latency_ms(saved_model: Path, tflite: bytes, frame: pd.DataFrame) -> tuple[float, float]:
    """Median one-row latency of the SavedModel signature and of the TFLite model, in ms."""
    import tensorflow as tf

    sample = frame.head(LATENCY_ROWS)
    rows = [
        {n: sample[n].to_numpy(dtype="float32")[i : i + 1] for n in sample.columns}
        for i in range(len(sample))
    ]
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    runner = _interpreter(tflite).get_signature_runner("serving_default")
    saved = _median_ms(lambda row: serve(**{n: tf.constant(v) for n, v in row.items()}), rows)
    lite = _median_ms(lambda row: runner(**row), rows)
    return saved, lite


def optimize(
    saved_model: Path, x_val: pd.DataFrame, y_val: np.ndarray, *, quantize: bool, tolerance: float
) -> dict[str, Any]:
    """Convert, measure both models on the validation set, keep the candidate if it is good enough.

    The decision is made on validation data, never the test set, so the test figures reported for
    the model stay unbiased.
    """
    candidate = convert(saved_model, quantize)
    auc_before = roc_auc(y_val, predict_saved_model(saved_model, x_val))
    auc_after = roc_auc(y_val, predict_tflite(candidate, x_val))
    ms_before, ms_after = latency_ms(saved_model, candidate, x_val)
    kept = bool(auc_before - auc_after < tolerance)
    if kept:
        (saved_model / TFLITE_FILE).write_bytes(candidate)
    return {
        "method": "tflite+dynamic-range-int8" if quantize else "tflite",
        "kept": kept,
        "tolerance": tolerance,
        "measured_on": "validation",
        "auc_before": auc_before,
        "auc_after": auc_after,
        "latency_ms_before": ms_before,
        "latency_ms_after": ms_after,
        "size_bytes_before": sum(
            p.stat().st_size for p in saved_model.rglob("*") if p.is_file() and p.name != TFLITE_FILE
        ),
        "size_bytes_after": len(candidate),
    }
