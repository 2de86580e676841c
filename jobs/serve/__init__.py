"""The serving job: registered model -> TensorFlow-Serving-compatible REST endpoint."""
