"""The reference a served model version is compared with: the statistics of the training dataset
it learned from, found through the lineage (model files -> training run -> training dataset)."""

from __future__ import annotations

import json
import logging
from typing import Any

import featurestore
from fjord.errors import FjordError
from fjord.lineage import get_run
from fjord.projects import Project

log = logging.getLogger("fjord.monitor")


def load_card(project: Project, model: str, version: int) -> dict[str, Any] | None:
    """``Models/<model>/<version>/fjord-model.json``: the version's test metrics, serving threshold and
    calibration, as the training job registered it (None for a version it did not register)."""
    path = f"Models/{model}/{version}/fjord-model.json"
    try:
        return json.loads(project.fs.read_text(path)) if project.fs.exists(path) else None
    except (OSError, ValueError) as exc:
        log.warning(
            "%s v%s: unreadable model card (%s); estimates use the default threshold", model, version, exc
        )
        return None


def training_dataset_of(project: Project, model: str, version: int) -> tuple[str, int, int] | None:
    """(feature view, its version, training dataset version) model ``version`` was trained on."""
    card_path = f"Models/{model}/{version}/fjord-model.json"
    if not project.fs.exists(card_path):
        return None
    run = get_run(json.loads(project.fs.read_text(card_path))["run_id"])
    datasets = [a for a in run.inputs if a.kind == "training_dataset" and a.version]
    if not datasets or "feature_view" not in run.params:
        return None
    return str(run.params["feature_view"]), int(run.params["feature_view_version"]), int(datasets[0].version)


def load_reference(project: Project, model: str, version: int) -> dict[str, Any] | None:
    """The training dataset statistics of model ``version``, or None (drift is then not scored)."""
    try:
        found = training_dataset_of(project, model, version)
        if found is None:
            log.warning("%s v%s: no training dataset in its lineage; drift is not scored", model, version)
            return None
        view, view_version, dataset = found
        store = featurestore.connect(project.name)
        stats = store.get_feature_view(view, view_version).get_training_dataset_statistics(dataset)
    except (FjordError, OSError, KeyError, ValueError) as exc:
        log.warning("%s v%s: no reference statistics (%s); drift is not scored", model, version, exc)
        return None
    labels = set(store.get_feature_view(view, view_version).labels)
    stats["features"] = {k: v for k, v in stats["features"].items() if k not in labels}
    return stats
