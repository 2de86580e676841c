"""Reference statistics of a training dataset: the grids the streaming monitor counts live values on."""

import numpy as np
import pyarrow as pa

from featurestore.statistics import reference_statistics


def test_continuous_discrete_and_categorical_features() -> None:
    rng = np.random.default_rng(7)
    amount = rng.lognormal(3, 1, 10_000)
    amount[:50] = np.nan  # NaN is missing, as the model server logs it
    table = pa.table(
        {
            "amount": amount,
            "hour": rng.integers(0, 24, 10_000).astype("float64"),
            "category": pa.array(rng.choice(["food", "travel", None], 10_000).tolist()),
        }
    )
    stats = reference_statistics(table, ["amount", "hour", "category"])
    a = stats["features"]["amount"]
    assert a["kind"] == "continuous" and a["count"] == 9_950 and a["nulls"] == 50
    assert len(a["edges"]) == 101 and a["edges"][0] == a["min"] and a["edges"][-1] == a["max"]
    assert set(a["psi_edges"]) <= set(a["edges"]) and len(a["psi_counts"]) == 10
    assert np.allclose(a["cdf"], np.linspace(0, 1, 101), atol=2e-4)  # the percentiles' own shares
    assert a["cdf"][-1] == 1.0
    h = stats["features"]["hour"]
    assert h["kind"] == "discrete" and h["edges"] == [float(v) for v in range(24)]
    assert sum(h["psi_counts"]) == 10_000 and set(h["psi_edges"]) <= set(h["edges"])
    c = stats["features"]["category"]
    assert c["kind"] == "categorical" and c["count"] + c["nulls"] == 10_000
    assert set(c["frequencies"]) == {"food", "travel"}


def test_an_empty_feature_has_empty_grids() -> None:
    stats = reference_statistics(pa.table({"x": pa.array([None, None], pa.float64())}), ["x"])
    assert stats["features"]["x"]["count"] == 0 and stats["features"]["x"]["edges"] == []


def _by_numpy(values: np.ndarray) -> dict:
    """The grids as numpy's unique, quantile, searchsorted and bincount give them on unsorted values:
    what the one-sort computation in featurestore/statistics.py must equal."""
    distinct = np.unique(values)
    if len(distinct) <= 100:
        edges = distinct
        psi_edges = np.unique(np.quantile(values, np.arange(1, 10) / 10, method="inverted_cdf"))
    else:
        grid = np.quantile(values, np.linspace(0, 1, 101))
        edges, psi_edges = np.unique(grid), np.unique(grid[10:100:10])
    return {
        "edges": edges,
        "cdf": np.searchsorted(np.sort(values), edges, side="right") / len(values),
        "sums": np.bincount(np.searchsorted(edges, values), weights=values, minlength=len(edges)),
        "psi_edges": psi_edges,
        "psi_counts": np.bincount(np.searchsorted(psi_edges, values), minlength=len(psi_edges) + 1),
    }


def test_the_one_sort_grids_equal_numpys_on_continuous_discrete_and_tied_values() -> None:
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = int(rng.integers(1, 2_000))
        values = [
            rng.normal(size=n),
            rng.integers(0, 5, n).astype("float64"),
            rng.exponential(size=n).round(1),  # many ties, often more than 100 distinct values
            np.concatenate([np.zeros(n), rng.normal(size=3)]),  # empty percentile bins
        ][trial % 4]
        ours = reference_statistics(pa.table({"x": values}), ["x"])["features"]["x"]
        for key, expected in _by_numpy(values).items():
            assert len(ours[key]) == len(expected), (trial, key)
            if key == "sums":
                assert np.allclose(ours[key], expected, rtol=1e-12, atol=1e-9), (trial, key)
            else:
                assert (np.asarray(ours[key]) == expected).all(), (trial, key)
