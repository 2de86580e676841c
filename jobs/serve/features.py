"""Online features at serving time (Hopsworks' transformers): requests carry entity keys and
request-time values; the server fills in the rest from the online store before the model call.

``--feature_view fraud/fraud_serving/1 --transformer jobs.serve.transformers:fraud_transactions``:
for a row-format request (``instances`` of objects) whose objects carry the view's key (``cc_num``),
the server reads every instance's feature vector in one batched online read
(``FeatureView.get_feature_vectors``), merges each instance's own values over it, and passes the rows
through the transformer, which returns the model's inputs. A request that already holds the model's
inputs (no key) passes untouched, so one serving answers both. Missing values become NaN, which the
fraud model fills with its training means; a bad transaction is a 400, never a 500.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from typing import Any

from jobs.serve.errors import invalid
from jobs.serve.metrics import Metrics

Transformer = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def load_transformer(spec: str) -> Transformer:
    """``module:function`` -> the function."""
    module, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        from fjord.errors import ConfigError

        raise ConfigError(f"--transformer {spec}: cannot load it ({exc})") from None
    return function  # type: ignore[no-any-return]


def view_version(ref: str, what: str) -> tuple[str, int]:
    """``VIEW`` (version 1), ``VIEW/2`` or ``VIEW/v2`` as (name, version); anything else is refused,
    never read as version 1."""
    from fjord.errors import ConfigError

    name, slash, version = ref.partition("/")
    digits = version[1:] if version[:1] in ("v", "V") else version
    if not name or "/" in version or (slash and not (digits.isdigit() and int(digits) >= 1)):
        raise ConfigError(f"{what}: expected VIEW or VIEW/VERSION (a number from 1, such as 2 or v2)")
    return name, int(digits) if slash else 1


class FeatureEnricher:
    """Fills row-format requests from a feature view's online vectors, then transforms them."""

    def __init__(self, view: Any, keys: list[str], transformer: Transformer | None, metrics: Metrics) -> None:
        self.view = view
        self.keys = keys
        self.transformer = transformer
        self.metrics = metrics

    @classmethod
    def from_flag(cls, spec: str, metrics: Metrics, transformer: str | None = None) -> FeatureEnricher:
        """``PROJECT/VIEW[/VERSION]``: the project's feature view (checked when the server starts)."""
        import featurestore
        from fjord.errors import ConfigError

        project, _, view_ref = spec.partition("/")
        if not project or not view_ref:
            raise ConfigError(f"--feature_view {spec!r}: expected PROJECT/VIEW or PROJECT/VIEW/VERSION")
        name, version = view_version(view_ref, f"--feature_view {spec!r}")
        view = featurestore.connect(project).get_feature_view(name, version)
        keys = list(view.query.group.primary_key)
        return cls(view, keys, load_transformer(transformer) if transformer else None, metrics)

    def __call__(self, model: str, doc: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
        instances = doc.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            return doc
        if not all(isinstance(i, dict) and all(k in i for k in self.keys) for i in instances):
            return doc  # the model's own inputs: nothing to look up
        started = time.perf_counter()
        try:
            vectors = self.view.get_feature_vectors(
                [{k: i[k] for k in self.keys} for i in instances], return_type="dict"
            )
        except Exception as exc:
            raise invalid(f"online feature lookup failed: {' '.join(str(exc).split())[:300]}") from None
        self.metrics.feature_lookup_latency.observe((time.perf_counter() - started) * 1e6, model_name=model)
        stored = set(vectors[0]) - set(self.keys) if vectors else set()
        overriding = sorted(stored & {name for instance in instances for name in instance})
        if overriding:  # a client must not set what the online store says about the card
            raise invalid(
                f"the request sets {', '.join(overriding)}, which the online store supplies for its key: "
                "send only the key and request-time values"
            )
        rows = [{**vector, **instance} for vector, instance in zip(vectors, instances, strict=True)]
        if self.transformer is not None:
            try:
                rows = self.transformer(rows)
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:  # OverflowError: ts 1e20
                raise invalid(f"cannot turn the request into model inputs: {exc}") from None
        missing = sorted({name for name in inputs if name not in rows[0]})
        if missing:
            raise invalid(f"after the online lookup, the model's inputs {missing} are still missing")
        filled = [{name: math.nan if row.get(name) is None else row[name] for name in inputs} for row in rows]
        return {**doc, "instances": filled}
