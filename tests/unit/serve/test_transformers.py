"""The fraud transformer computes at serving time what the ETL job computes in a batch."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.serve.transformers import fraud_transactions

CARD = {
    "cc_num": 4111,
    "last_ts": 1_764_547_200.0,  # 2025-12-01T00:00:00Z
    "last_lat": 52.52,
    "last_lon": 13.40,
    "tx_count_1h": 2,
    "tx_count_24h": 5,
    "amount_sum_24h": 300.0,
    "tx_count_7d": 9,
    "amount_sum_7d": 900.0,
    "category_counts_7d": json.dumps({"grocery_pos": 3, "travel": 6}),
    "age_years": 40.5,
    "days_to_expiry": 400,
}


def test_a_known_card_adds_this_transaction_to_its_windows():
    row = {
        **CARD,
        "amount": 100.0,
        "ts": "2025-12-01T00:30:00Z",
        "lat": 48.14,
        "lon": 11.58,
        "category": "travel",
    }
    (out,) = fraud_transactions([row])
    assert out["tx_count_1h"] == 3 and out["tx_count_24h"] == 6 and out["amount_sum_24h"] == 400.0
    assert out["amount_mean_7d"] == pytest.approx(1000.0 / 10)
    assert out["category_freq_7d"] == pytest.approx(7 / 10)
    assert out["secs_since_prev"] == 1800.0
    assert out["dist_prev_km"] == pytest.approx(504, abs=2)  # Berlin -> Munich
    assert out["speed_prev_kmh"] == pytest.approx(out["dist_prev_km"] * 2)
    assert (out["hour"], out["is_night"], out["age_years"], out["days_to_expiry"]) == (0.0, 1.0, 40.5, 400.0)


def test_windows_that_ended_before_the_request_count_as_empty():
    row = {**CARD, "amount": 50.0, "ts": CARD["last_ts"] + 2 * 86_400, "category": "grocery_pos"}
    (out,) = fraud_transactions([row])
    assert (out["tx_count_1h"], out["tx_count_24h"], out["amount_sum_24h"]) == (1, 1, 50.0)
    assert out["amount_mean_7d"] == pytest.approx(950 / 10) and out["category_freq_7d"] == pytest.approx(0.4)
    assert math.isnan(out["dist_prev_km"])  # no place given for this transaction


def test_an_unknown_card_gets_the_documented_defaults():
    (out,) = fraud_transactions([{"cc_num": 1, "amount": 20.0, "ts": 1_764_561_600, "category": "travel"}])
    assert (out["tx_count_1h"], out["tx_count_24h"], out["amount_sum_24h"]) == (1, 1, 20.0)
    assert out["amount_mean_7d"] == 20.0 and out["category_freq_7d"] == 1.0 and out["hour"] == 4.0
    assert all(math.isnan(out[k]) for k in ("secs_since_prev", "dist_prev_km", "age_years", "days_to_expiry"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"cc_num": 1, "ts": 0}, "missing amount"),
        ({"cc_num": 1, "amount": 1.0, "ts": "yesterday"}, "Invalid isoformat"),
        ({"cc_num": 1, "amount": 1.0, "ts": [1]}, "neither epoch seconds nor an ISO 8601 time"),
        ({"cc_num": 1, "amount": 1.0, "ts": 1e20}, "not epoch seconds from 1970 to year 9999"),
        ({"cc_num": 1, "amount": 1.0, "ts": float("nan")}, "not epoch seconds from 1970 to year 9999"),
    ],
)
def test_a_bad_transaction_is_a_value_error(row, message):
    with pytest.raises(ValueError, match=message):
        fraud_transactions([row])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@given(
    row=st.fixed_dictionaries(
        {},
        optional={
            "cc_num": JSON,
            "amount": JSON | st.integers(-(10**400), 10**400),
            "ts": JSON | st.sampled_from([1e20, -1.0, float("inf"), "2026-12-01T10:00:00Z", 1_764_547_200]),
            "lat": JSON,
            "lon": JSON,
            "category": JSON,
            "last_ts": JSON,
            "tx_count_1h": JSON,
            "category_counts_7d": st.none() | st.just('{"travel": 2}'),
            "age_years": JSON,
        },
    )
)
@settings(max_examples=500, deadline=None)
def test_any_transaction_is_model_inputs_or_one_of_the_errors_the_server_answers_400(row):
    """The errors FeatureEnricher turns into a 400; anything else would be a 500."""
    try:
        (out,) = fraud_transactions([row])
    except (ValueError, TypeError, KeyError, ArithmeticError):
        return
    assert all(isinstance(value, float) for value in out.values())
