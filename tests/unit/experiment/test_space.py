"""Search spaces: parsing, the errors of bad spaces, grid, sampling and the DE vector mapping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fjord.experiment.space import Choice, Range, SearchSpaceError, parse_space


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "the search space is empty"),
        ({"units": []}, "'units': the list of values is empty"),
        ({"lr": (0.1, 0.01)}, "'lr': the range (0.1, 0.01) is empty"),
        ({"lr": (0.1, 0.1)}, "is empty"),
        ({"lr": (0.0, 0.1, "log")}, "a log range needs a positive low bound"),
        ({"lr": (1e-4, 0.1, "exp")}, "scale 'exp' is not one of"),
        ({"lr": (1e-4,)}, "a range is (low, high)"),
        ({"lr": ("a", 1.0)}, "range bounds must be finite numbers"),
        ({"lr": (0.0, float("inf"))}, "range bounds must be finite numbers"),
        ({"epochs": 3}, "no list or range to search"),
        ({"not valid": [1]}, "not a Python identifier"),
    ],
)
def test_bad_spaces_are_refused_with_the_entry_named(space, message):
    with pytest.raises(SearchSpaceError) as error:
        parse_space(space)
    assert message in str(error.value)


def test_kinds_of_entries():
    space = parse_space({"lr": (1e-4, 1e-1, "log"), "units": [32, 64], "layers": (1, 4), "epochs": 5})
    assert space.dimensions["lr"] == Range(1e-4, 1e-1, "log", False)
    assert space.dimensions["layers"] == Range(1, 4, "linear", True)
    assert space.dimensions["units"] == Choice((32, 64))
    assert space.fixed == {"epochs": 5}


def test_grid_is_every_combination_with_fixed_values():
    grid = parse_space({"lr": [0.1, 0.01], "units": [1, 2, 3], "epochs": 2}).grid()
    assert len(grid) == 6
    assert {(g["lr"], g["units"]) for g in grid} == {(a, b) for a in (0.1, 0.01) for b in (1, 2, 3)}
    assert all(g["epochs"] == 2 for g in grid)


def test_grid_refuses_ranges():
    with pytest.raises(SearchSpaceError, match="grid_search needs lists of values; 'lr' is a range"):
        parse_space({"lr": (0.1, 1.0), "units": [1]}).grid()


def test_samples_stay_in_bounds_and_are_seeded():
    space = parse_space({"lr": (1e-4, 1e-1, "log"), "layers": (1, 4), "units": [8, 16]})
    first = [space.sample(random.Random(3)) for _ in range(3)]
    again = [space.sample(random.Random(3)) for _ in range(3)]
    assert first == again
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(500)]
    assert all(1e-4 <= s["lr"] <= 1e-1 for s in samples)
    assert {s["layers"] for s in samples} == {1, 2, 3, 4}
    assert {s["units"] for s in samples} == {8, 16}
    # log scale: about as many samples below 1e-2.5 as above
    below = sum(s["lr"] < 10**-2.5 for s in samples)
    assert 200 < below < 300


@given(unit=st.floats(0, 1), units=st.sampled_from([8, 16, 32]))
def test_vectors_map_back_to_the_same_parameters(unit, units):
    space = parse_space({"lr": (1e-4, 1e-1, "log"), "units": [8, 16, 32]})
    params = space.from_vector([unit, 0.5])
    assert space.from_vector(space.to_vector(params)) == pytest.approx(params)
    with_units = {"lr": params["lr"], "units": units}
    assert space.from_vector(space.to_vector(with_units))["units"] == units
