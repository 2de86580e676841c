"""The training job: training dataset -> searched, trained, optimized and registered model."""
