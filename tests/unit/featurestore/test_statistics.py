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
