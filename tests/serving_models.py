"""Small SavedModels in TF Serving's layout for the serving tests (built in seconds, no training)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def write_version(base: Path, version: int, *, scale: float = 1.0, marker: bool = True) -> Path:
    """``base/<version>/``: ``serving_default`` (x, y float32 [-1] -> sum = scale*(x+y), diff = x-y)
    and ``echo`` (text_bytes string [-1] -> length int32, same_bytes string); ``_SUCCESS`` last."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.float32, "x"), tf.TensorSpec([None], tf.float32, "y")]
        )
        def serve(self, x, y):
            return {"sum": scale * (x + y), "diff": x - y}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "text_bytes")])
        def echo(self, text_bytes):
            return {"length": tf.strings.length(text_bytes), "same_bytes": text_bytes}

    model = Model()
    path = base / str(version)
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve, "echo": model.echo})
    if marker:
        (path / "_SUCCESS").write_text(json.dumps({"files": 0}))
    return path


def write_corrupt_version(base: Path, version: int) -> Path:
    """A version directory whose ``saved_model.pb`` is garbage, with its marker: it must never load."""
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"\x00not a SavedModel\xff" * 10)
    (path / "_SUCCESS").write_text("{}")
    return path


def write_failing_version(base: Path, version: int, *, below: float = 100.0) -> Path:
    """``serving_default`` as :func:`write_version`'s (scale 1), except that it fails (an assertion,
    a 400) for any ``x`` of ``below`` or more: a version with a bug on part of the traffic."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.float32, "x"), tf.TensorSpec([None], tf.float32, "y")]
        )
        def serve(self, x, y):
            with tf.control_dependencies([tf.debugging.assert_less(x, below, message="x out of range")]):
                return {"sum": x + y, "diff": x - y}

    model = Model()
    path = base / str(version)
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    (path / "_SUCCESS").write_text(json.dumps({"files": 0}))
    return path


def publish_version(project: Any, local_base: Path, name: str = "m", version: int = 1) -> None:
    """Write a model version under ``local_base`` and publish it to ``project``'s Models/<name>/<version>
    (as a deploy reads it from the storage root)."""
    local = write_version(local_base, version)
    with project.fs.publish(f"Models/{name}/{version}") as staged:
        for file in (f for f in local.rglob("*") if f.is_file()):
            staged.upload(str(file), str(file.relative_to(local)))
