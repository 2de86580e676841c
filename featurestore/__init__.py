"""Fjord's feature store: feature groups, feature views and training datasets on the shared filesystem."""
