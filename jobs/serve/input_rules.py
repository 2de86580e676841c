"""Serving checks its inputs against the rules the ETL already knows.

The ETL's expectation suites (``jobs/etl/expectations/*.json``) say what a valid transaction is:
``amount`` in [0, 100000], ``lat`` in [-90, 90], ``category`` one of ten, ``cc_num`` not null. A
request that breaks them used to be scored anyway (``amount: -5, lat: 999, category: "nope"`` got a
fraud probability of 1.0). With ``--input_rules transactions`` the server applies the suite's row-wise
rules (not null, between, in set) to every instance of a request, before the online lookup; a rule
applies to the fields a request carries (a passthrough ``tid`` is taken out before, so its rule waits).
Rules the suite only warns about are left out: the ETL lets those rows through too.

Each serving chooses what a violation does (``--input_rules_mode``):

- ``reject``: a 400 naming the instance, the field, its value and the rule; nothing is scored;
- ``flag``: the request is scored, and its inference log record carries the violations
  (``violations``: field and rule per broken value), which the monitor counts per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fjord.errors import ConfigError
from jobs.serve.errors import invalid

MODES = ("reject", "flag")
MAX_NAMED = 5  # a rejection names this many violations, then counts the rest


@dataclass(frozen=True)
class Rule:
    """One row-wise expectation of a suite, for one field."""

    field: str
    kind: str  # not_null, between or in_set
    low: float | None = None
    high: float | None = None
    allowed: tuple[Any, ...] = ()

    @property
    def text(self) -> str:
        if self.kind == "not_null":
            return "must not be null"
        if self.kind == "in_set":
            return f"must be one of {list(self.allowed)}"
        if self.low is not None and self.high is not None:
            return f"must be within [{self.low:g}, {self.high:g}]"
        return f"must be at least {self.low:g}" if self.low is not None else f"must be at most {self.high:g}"

    def broken_by(self, value: Any) -> bool:
        """True if ``value`` breaks the rule (as in GX, a null breaks only not-null)."""
        if self.kind == "not_null":
            return value is None
        if value is None:
            return False
        if self.kind == "in_set":
            return not isinstance(value, str | int | float) or value not in self.allowed
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True  # not a number: no range holds it
        if math.isnan(value):
            return True
        return (self.low is not None and value < self.low) or (self.high is not None and value > self.high)


class InputRules:
    """A suite's row-wise rules, and what breaking one does."""

    def __init__(self, suite: str, rules: list[Rule], mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"--input_rules_mode {mode!r}: one of {', '.join(MODES)}")
        self.suite = suite
        self.rules = rules
        self.mode = mode

    @classmethod
    def from_flag(cls, spec: str, mode: str = "reject") -> InputRules:
        """``spec``: a suite of the ETL (``transactions``) or the path of a suite file."""
        from jobs.etl.validation import EXPECTATIONS_DIR, load_suite

        path = Path(spec) if spec.endswith(".json") else EXPECTATIONS_DIR / f"{spec}.json"
        try:
            suite = load_suite(path.stem, {}, path.parent)
        except FileNotFoundError:
            known = ", ".join(sorted(p.stem for p in EXPECTATIONS_DIR.glob("*.json")))
            raise ConfigError(f"--input_rules {spec}: no such suite (the ETL's: {known})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--input_rules {spec}: {exc}") from None
        rules = [rule for item in suite if (rule := _rule(item)) is not None]
        if not rules:
            raise ConfigError(f"--input_rules {spec}: the suite has no row-wise rule to apply")
        return cls(path.stem, rules, mode)

    def violations(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every broken rule of every row: ``{"row", "field", "value", "rule"}``, in row order."""
        found = []
        for i, row in enumerate(rows):
            for rule in self.rules:
                if rule.field in row and rule.broken_by(value := row[rule.field]):
                    found.append({"row": i, "field": rule.field, "value": _shown(value), "rule": rule.text})
        return found

    def check(self, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """The violations of a predict body's rows; in ``reject`` mode, a 400 naming them instead."""
        found = self.violations(_rows(doc))
        if found and self.mode == "reject":
            named = "; ".join(
                f"instance {v['row']}: {v['field']} {v['value']} {v['rule']}" for v in found[:MAX_NAMED]
            )
            more = f" (and {len(found) - MAX_NAMED} more)" if len(found) > MAX_NAMED else ""
            raise invalid(f"the request breaks the {self.suite} input rules: {named}{more}")
        return found


def _rule(item: dict[str, Any]) -> Rule | None:
    """The serving rule of a suite item; ``None`` for table-wide or warn-only expectations."""
    kwargs = item["kwargs"]
    if item["on_failure"] == "warn" or "column" not in kwargs:
        return None
    column = kwargs["column"]
    if item["type"] == "expect_column_values_to_not_be_null":
        return Rule(column, "not_null")
    if item["type"] == "expect_column_values_to_be_between":
        return Rule(column, "between", low=kwargs.get("min_value"), high=kwargs.get("max_value"))
    if item["type"] == "expect_column_values_to_be_in_set":
        return Rule(column, "in_set", allowed=tuple(kwargs["value_set"]))
    return None


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A predict body's rows as objects: row format's ``instances`` of objects, or columnar ``inputs``."""
    instances = doc.get("instances")
    if isinstance(instances, list):
        return [i for i in instances if isinstance(i, dict)]
    inputs = doc.get("inputs")
    if isinstance(inputs, dict):
        columns = {k: v if isinstance(v, list) else [v] for k, v in inputs.items()}
        length = max((len(v) for v in columns.values()), default=0)
        return [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(length)]
    return []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
