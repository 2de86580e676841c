"""The fraud model as an MLflow model ("models from code"): MLflow's own tools load and serve every
registered version (``mlflow.pyfunc.load_model("models:/fraud@champion")``, ``mlflow models serve``).

The artifact is the version's SavedModel, the same files TF Serving's layout holds under
``Models/<name>/<version>/``; this file is stored with the model, so loading it needs no Fjord code.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class SavedModelSignature(mlflow.pyfunc.PythonModel):
    """A DataFrame of the named features in, the serving signature's outputs out."""

    def load_context(self, context: Any) -> None:
        import tensorflow as tf

        self._tf = tf
        self._serve = tf.saved_model.load(context.artifacts["saved_model"]).signatures["serving_default"]
        self._inputs = sorted(self._serve.structured_input_signature[1])

    # No type hints: MLflow would read them as a schema; the logged signature is the schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        tf = self._tf
        outputs = self._serve(**{n: tf.constant(frame[n].to_numpy(dtype="float32")) for n in self._inputs})
        return pd.DataFrame({name: value.numpy() for name, value in outputs.items()})


mlflow.models.set_model(SavedModelSignature())
