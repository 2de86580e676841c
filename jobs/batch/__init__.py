"""Batch inference: score a feature view's batch data with the champion, as a versioned dataset."""
