"""Which version answers a predict call, and which version scores it in the shadow.

A call that names a version or a label gets it (TF Serving's rule). A call that names neither goes:

- on a serving with a ``stable`` label (every serving Fjord deploys), to ``stable``; with a canary
  split, to ``canary`` for ``percent`` % of the values of the split's key (a request field such as
  ``card_id``). The split is sticky: a value's side is a hash of it, not a draw, so all of one card's
  transactions are answered by one version. A request without the key goes to ``stable``; a split
  without a key draws each call;
- on a server without labels (``--model_base_path``), to the latest version, as TF Serving.

A canary that fails a call it was routed (any error: it cannot load, read or score the request) is
not the client's problem: the failure is logged as the canary's, and ``stable`` answers the call
(``fjord_serving_canary_fallbacks``). The canary rule (jobs/serve/canary.py) sees the error rate.

The ``shadow`` label's version scores every call another version answered, after the answer is sent
(:meth:`jobs.serve.handlers.Handlers.shadow`); its outputs are logged with ``"shadow": true`` and the
answered call's inference id, never returned.

The split lives in ``routing.json`` beside ``models.config`` (``{"fraud": {"canary_percent": 10,
"canary_key": "card_id"}}``), written atomically by ``jobs.serve.serving`` and re-read with it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fjord.errors import ConfigError
from jobs.serve.errors import ServingError

STABLE, CANARY, SHADOW = "stable", "canary", "shadow"


@dataclass(frozen=True)
class Split:
    """The share of a serving's label-less calls its canary answers, by the value of ``key``."""

    percent: float = 0.0
    key: str | None = None


def bucket(value: Any) -> float:
    """Where ``value`` falls in [0, 100): the same on every server and every run."""
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


def read_splits(path: Path | None) -> dict[str, Split]:
    """The splits of a routing file (none: no file)."""
    if path is None or not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a routing file ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a routing file is an object of serving -> split")
    splits = {}
    for name, entry in doc.items():
        percent = entry.get("canary_percent", 0) if isinstance(entry, dict) else None
        key = entry.get("canary_key") if isinstance(entry, dict) else None
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
            raise ConfigError(f"{path}: {name}: canary_percent must be a number from 0 to 100")
        if key is not None and not isinstance(key, str):
            raise ConfigError(f"{path}: {name}: canary_key must be a field name")
        splits[name] = Split(float(percent), key)
    return splits


def write_splits(path: Path, splits: dict[str, Split]) -> None:
    """Write a routing file atomically (the server sees the old one or the new one)."""
    doc = {name: {"canary_percent": s.percent, "canary_key": s.key} for name, s in sorted(splits.items())}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(doc, indent=2))
    staging.replace(path)


def key_of(doc: Any, key: str) -> Any:
    """The split key's value in a REST predict body: the first row's (one call, one version)."""
    if not isinstance(doc, dict):
        return None
    instances, columns = doc.get("instances"), doc.get("inputs")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return instances[0].get(key)
    if isinstance(columns, dict) and key in columns:
        column = columns[key]
        return column[0] if isinstance(column, list) and column else column
    return None


class Router:
    """Routes label-less calls by the served labels and the splits; finds the shadow."""

    def __init__(self, manager: Any, splits: dict[str, Split] | None = None) -> None:
        self.manager = manager
        self.splits = splits or {}

    def route(self, call: Any, key_value: Any = None) -> None:
        """Set ``call.label`` (and ``call.routed``) for a call that names no version or label."""
        if call.version is not None or call.label is not None:
            return
        labels = self.manager.labels(call.model)
        if STABLE not in labels:
            return  # a server without labels: the latest version, as TF Serving
        split = self.splits.get(call.model)
        canary = False
        if split is not None and split.percent > 0 and CANARY in labels:
            if split.key is None:  # no key: each call drawn on its own
                canary = random.random() * 100 < split.percent
            elif key_value is not None:
                canary = bucket(key_value) < split.percent
        call.label = call.routed = CANARY if canary else STABLE

    def split_key(self, model: str) -> str | None:
        split = self.splits.get(model)
        return split.key if split and split.percent > 0 else None

    def shadow(self, model: str, answered: int) -> Any:
        """The loaded shadow version of ``model``, unless it is the version that answered (or absent)."""
        version = self.manager.labels(model).get(SHADOW)
        if version is None or version == answered:
            return None
        try:
            return self.manager.resolve(model, version)
        except ServingError:  # not loaded (yet): no shadow for this call
            return None
