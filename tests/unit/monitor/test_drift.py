"""The monitor's drift scores, computed from a window's bin counts, against Evidently's own stat tests
on the raw values of the same data (evidently is installed in the test environment only)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.calculations.stattests.psi import _psi
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm
from evidently.legacy.core import ColumnType

from featurestore.statistics import reference_statistics
from jobs.monitor import drift

RNG = np.random.default_rng(11)
N = 20_000


def _reference(**columns: np.ndarray) -> dict:
    return reference_statistics(pa.table(columns), list(columns))["features"]


def _grid(reference: dict, values: np.ndarray) -> tuple[dict[int, int], dict[int, float]]:
    bins = drift.grid_bin(reference["edges"], values)
    found, counts = np.unique(bins, return_counts=True)
    sums = {int(b): float(values[bins == b].sum()) for b in found}
    return dict(zip(found.tolist(), counts.tolist(), strict=True)), sums


def _decile_labels(reference: dict, values: np.ndarray) -> pd.Series:
    return pd.Series(np.searchsorted(reference["psi_edges"], values, side="left"))


CURRENTS = {
    "same": lambda: RNG.lognormal(3, 1, 5_000),
    "scaled": lambda: RNG.lognormal(3, 1, 5_000) * 1.3,
    "shifted": lambda: RNG.lognormal(3.5, 1.2, 5_000),
    "beyond the range": lambda: RNG.lognormal(6, 0.5, 2_000),
}


@pytest.mark.parametrize("current", CURRENTS.values(), ids=CURRENTS.keys())
def test_continuous_feature_agrees_with_evidently(current) -> None:
    ref_values, cur_values = RNG.lognormal(3, 1, N), current()
    reference = _reference(amount=ref_values)["amount"]
    grid, sums = _grid(reference, cur_values)

    ours = drift.wasserstein_norm(reference, grid, sums)
    theirs, _ = _wasserstein_distance_norm(
        pd.Series(ref_values), pd.Series(cur_values), ColumnType.Numerical, 0.1
    )
    assert ours == pytest.approx(theirs, rel=0.01, abs=0.003)  # same data: both are noise

    # PSI on the reference's deciles: Evidently's PSI of the same bins (given as categories)
    ours = drift.psi(reference["psi_counts"], drift.psi_bin_counts(reference, grid))
    theirs, _ = _psi(
        _decile_labels(reference, ref_values),
        _decile_labels(reference, cur_values),
        ColumnType.Categorical,
        0.2,
    )
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_discrete_feature_is_exact() -> None:
    ref_values = RNG.integers(0, 24, N).astype("float64")
    cur_values = np.where(RNG.random(4_000) < 0.3, 3.0, RNG.integers(0, 24, 4_000)).astype("float64")
    reference = _reference(hour=ref_values)["hour"]
    ours = drift.wasserstein_norm(reference, *_grid(reference, cur_values))
    theirs, _ = _wasserstein_distance_norm(
        pd.Series(ref_values), pd.Series(cur_values), ColumnType.Numerical, 0.1
    )
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_categorical_feature_agrees_with_evidently() -> None:
    ref_values = RNG.choice(["food", "travel", "gas", "shopping"], N, p=[0.4, 0.3, 0.2, 0.1])
    cur_values = RNG.choice(["food", "travel", "gas", "online"], 3_000, p=[0.2, 0.3, 0.2, 0.3])
    reference = _reference(category=ref_values)["category"]
    current = pd.Series(cur_values).value_counts().to_dict()
    ours = drift.jensen_shannon(reference["frequencies"], current)
    theirs, _ = _jensenshannon(pd.Series(ref_values), pd.Series(cur_values), ColumnType.Categorical, 0.1)
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_empty_bins_are_filled_as_evidently_does() -> None:
    assert drift.fill_empty_bins(np.array([0.5, 0.5, 0.0])).tolist() == [0.5, 0.5, 0.0001]
    assert drift.fill_empty_bins(np.array([0.99995, 0.00005, 0.0]))[2] == pytest.approx(5e-11)
    assert drift.psi([10, 10], [10, 10]) == 0.0
