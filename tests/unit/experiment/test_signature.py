"""A trial function that cannot take the search space's parameters is refused before anything runs
(docs/experiments.md's `train(lr, units, dropout)` with a space of other names once failed every trial
twice with a TypeError)."""

from __future__ import annotations

import pytest

from fjord import experiment
from fjord.experiment import SearchSpaceError


def train(lr, units, dropout=0.1):
    return {"metric": lr * units}


def anything(**params):
    return {"metric": 1.0}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: experiment.grid_search(train, {"lr": [0.1], "units": [4], "layers": [2]}),
            "unexpected keyword argument 'layers'",
        ),
        (
            lambda: experiment.random_search(train, {"lr": (0.01, 0.1)}),
            "missing a required argument: 'units'",
        ),
        (lambda: experiment.launch(train, {"units": 3}), "missing a required argument: 'lr'"),
        (
            lambda: experiment.distributed(train, {"lr": 1, "units": 2, "x": 0}),
            "unexpected keyword argument 'x'",
        ),
    ],
)
def test_a_function_that_cannot_take_the_parameters_is_refused_first(call, message) -> None:
    with pytest.raises(SearchSpaceError, match=message) as refused:
        call()
    assert refused.value.exit_code == 2 and "train(lr, units, dropout=0.1) cannot take the" in str(
        refused.value
    )


def test_defaults_and_keyword_catch_alls_are_fine() -> None:
    from fjord.experiment import _check_takes

    _check_takes(train, ["lr", "units"], "parameters")
    _check_takes(anything, ["a", "b"], "parameters")
