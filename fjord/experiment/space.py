"""Search spaces: what each hyperparameter may take, checked before any trial runs.

A space maps names to:

- a **list** of values: a choice (``[32, 64, 128]``);
- a **tuple** ``(low, high)`` or ``(low, high, "log")``: a range; integers if both bounds are
  integers, and ``"log"`` samples on a log scale (``(1e-4, 1e-1, "log")``);
- anything else: a fixed value.

``grid`` needs choices only; ``sample`` and the differential-evolution helpers take both.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fjord.errors import FjordError

SCALES = ("linear", "log")


class SearchSpaceError(FjordError):
    """A search space is empty or malformed."""

    exit_code = 2


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    scale: str = "linear"
    integer: bool = False

    def sample(self, rng: random.Random) -> float | int:
        return self.at(rng.random())

    def at(self, unit: float) -> float | int:
        """The value at ``unit`` in [0, 1] along the range (on its scale)."""
        unit = min(max(unit, 0.0), 1.0)
        if self.scale == "log":
            value = math.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + unit * (self.high - self.low)
        return round(value) if self.integer else value

    def unit(self, value: float) -> float:
        """Inverse of :meth:`at`."""
        if self.scale == "log":
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


Dimension = Choice | Range


@dataclass(frozen=True)
class SearchSpace:
    dimensions: dict[str, Dimension]
    fixed: dict[str, Any]

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choices (ranges are refused: a grid needs values)."""
        ranges = [name for name, dim in self.dimensions.items() if isinstance(dim, Range)]
        if ranges:
            raise SearchSpaceError(
                f"grid_search needs lists of values; {', '.join(map(repr, ranges))} "
                "is a range (use random_search, or list the values)"
            )
        names = list(self.dimensions)
        combos = itertools.product(*(self.dimensions[n].values for n in names))  # type: ignore[union-attr]
        return [{**self.fixed, **dict(zip(names, combo, strict=True))} for combo in combos]

    def sample(self, rng: random.Random) -> dict[str, Any]:
        params = dict(self.fixed)
        for name, dim in self.dimensions.items():
            params[name] = dim.sample(rng) if isinstance(dim, Range) else rng.choice(dim.values)
        return params

    # Differential evolution works on vectors in [0, 1]^d; choices map to their index's interval.
    def to_vector(self, params: Mapping[str, Any]) -> list[float]:
        vector = []
        for name, dim in self.dimensions.items():
            if isinstance(dim, Range):
                vector.append(dim.unit(params[name]))
            else:
                vector.append((dim.values.index(params[name]) + 0.5) / len(dim.values))
        return vector

    def from_vector(self, vector: list[float]) -> dict[str, Any]:
        params = dict(self.fixed)
        for (name, dim), unit in zip(self.dimensions.items(), vector, strict=True):
            if isinstance(dim, Range):
                params[name] = dim.at(unit)
            else:
                params[name] = dim.values[min(int(unit * len(dim.values)), len(dim.values) - 1)]
        return params


def parse_space(space: Mapping[str, Any]) -> SearchSpace:
    """Check ``space`` and return it typed; :class:`SearchSpaceError` names the first bad entry."""
    if not isinstance(space, Mapping) or not space:
        raise SearchSpaceError("the search space is empty: give at least one hyperparameter")
    dimensions: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for name, spec in space.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SearchSpaceError(f"hyperparameter name {name!r} is not a Python identifier")
        if isinstance(spec, list):
            if not spec:
                raise SearchSpaceError(f"{name!r}: the list of values is empty")
            dimensions[name] = Choice(tuple(spec))
        elif isinstance(spec, tuple):
            dimensions[name] = _parse_range(name, spec)
        else:
            fixed[name] = spec
    if not dimensions:
        raise SearchSpaceError("the search space has no list or range to search: all values are fixed")
    return SearchSpace(dimensions, fixed)


def _parse_range(name: str, spec: tuple[Any, ...]) -> Range:
    if len(spec) not in (2, 3):
        raise SearchSpaceError(f"{name!r}: a range is (low, high) or (low, high, 'log'), not {spec!r}")
    low, high, *rest = spec
    scale = rest[0] if rest else "linear"
    if scale not in SCALES:
        raise SearchSpaceError(f"{name!r}: scale {scale!r} is not one of {SCALES}")
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise SearchSpaceError(f"{name!r}: range bounds must be finite numbers, not {bound!r}")
    if not low < high:
        raise SearchSpaceError(f"{name!r}: the range ({low}, {high}) is empty: low must be below high")
    if scale == "log" and low <= 0:
        raise SearchSpaceError(f"{name!r}: a log range needs a positive low bound, not {low}")
    return Range(low, high, scale, isinstance(low, int) and isinstance(high, int))
