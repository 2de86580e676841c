"""Passthrough keys: request fields that are not model inputs, logged with the call, never fed to the model.

A serving names them (``fjord model deploy --passthrough tid``; the server's ``--passthrough
fraud=tid``). A request may then carry them beside the model's inputs::

    {"instances": [{"cc_num": 4012, "amount": 9.5, "ts": 1764750000, "tid": "t-81"}]}
    {"inputs": {"amount": [9.5, 3.0], "tid": ["t-81", "t-82"]}}           (columnar)
    PredictRequest.inputs["tid"] = a string or integer tensor, one value per row   (gRPC)

The server takes them out before anything else reads the request (the input rules, the online
lookup, the model), and the inference log records of the call carry them, one value per row, in
``passthrough`` (``{"tid": ["t-81"]}``). That is what later joins a served prediction to its label
and to the features the ETL computes for the same transaction (docs/monitoring.md). A row without
the field logs ``null``. A value must be a string (at most 256 characters), a number, a boolean or
null: anything else is a 400, never a 500.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from jobs.serve.errors import invalid

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_TEXT = 256


def check_names(names: list[str] | tuple[str, ...], what: str) -> tuple[str, ...]:
    """The names, each a plain identifier, none twice; :class:`ConfigError` naming the first bad one."""
    from fjord.errors import ConfigError

    for name in names:
        if not NAME.fullmatch(name):
            raise ConfigError(f"{what}: {name!r} is not a field name (letters, digits and _, up to 64)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: a field is named twice")
    return tuple(names)


def parse_flags(flags: list[str]) -> dict[str, tuple[str, ...]]:
    """``--passthrough MODEL=field[,field]`` flags -> {model: fields}."""
    from fjord.errors import ConfigError

    out: dict[str, tuple[str, ...]] = {}
    for flag in flags:
        model, equals, fields = flag.partition("=")
        if not equals or not model or not fields:
            raise ConfigError(f"--passthrough {flag!r}: expected MODEL=field[,field]")
        if model in out:
            raise ConfigError(f"--passthrough: model {model} is given twice")
        out[model] = check_names(fields.split(","), f"--passthrough {flag!r}")
    return out


def _scalar(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise invalid(f"passthrough field {name}: a text of {len(value)} characters (at most {MAX_TEXT})")
        return value
    kind = "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "not JSON"
    raise invalid(f"passthrough field {name}: {kind}, expected a string, a number, a boolean or null")


class Passthrough:
    """The passthrough fields of each served model, taken out of its requests."""

    def __init__(self, fields: dict[str, tuple[str, ...]]) -> None:
        self.fields = fields

    def take(self, model: str, doc: Any) -> dict[str, list[Any]] | None:
        """Remove ``model``'s passthrough fields from a REST predict body; their values, one per row
        (None: the model has none, or the request carries none)."""
        names = self.fields.get(model)
        if not names or not isinstance(doc, dict):
            return None
        taken: dict[str, list[Any]] = {}
        instances, columns = doc.get("instances"), doc.get("inputs")
        if isinstance(instances, list) and any(isinstance(i, dict) for i in instances):
            for name in names:
                if any(isinstance(i, dict) and name in i for i in instances):
                    taken[name] = [
                        _scalar(name, i.pop(name, None)) if isinstance(i, dict) else None for i in instances
                    ]
        elif isinstance(columns, dict):
            for name in names:
                if name in columns:
                    column = columns.pop(name)
                    values = column if isinstance(column, list) else [column]
                    taken[name] = [_scalar(name, v) for v in values]
        return taken or None

    def take_tensors(self, model: str, tensors: dict[str, Any], decode: Any) -> dict[str, list[Any]] | None:
        """The same for a gRPC request's input tensors: ``decode(name, proto)`` -> a numpy array."""
        names = [n for n in self.fields.get(model, ()) if n in tensors]
        taken = {}
        for name in names:
            array = np.asarray(decode(name, tensors.pop(name))).ravel()
            values = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.tolist()]
            taken[name] = [_scalar(name, v) for v in values]
        return taken or None
