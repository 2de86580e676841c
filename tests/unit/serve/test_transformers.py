"""The fraud transformer computes at serving time what the ETL job computes in a batch."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.serve.transformers import FraudTransformer, _haversine_km, fraud_transactions

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


NOON = 1_764_590_400  # 2025-12-01T12:00:00Z
STATE = {  # a card's published state with its last 7 days (jobs/etl/fraud.py card_features)
    "cc_num": 4111, "last_ts": float(NOON), "last_lat": 52.52, "last_lon": 13.40,
    "recent_7d": json.dumps([
        {"s": NOON - 6 * 86_400, "a": 10.0, "c": "travel", "la": 52.52, "lo": 13.40},  # 7 days only
        {"s": NOON - 86_400 + 1_800, "a": 20.0, "c": "grocery"},  # 22.5 h before the request
        {"s": NOON, "a": 30.0, "c": "travel", "la": 52.52, "lo": 13.40},  # the last, 1.5 h before
    ]),
    "age_years": 40.0, "days_to_expiry": 400, "as_of": "2025-12-01T00:00:00+00:00",
}  # fmt: skip


def test_windows_are_counted_over_the_cards_last_seven_days_as_the_etl_counts_them():
    request = {**STATE, "amount": 40.0, "ts": NOON + 5_400, "lat": 52.52, "lon": 13.40, "category": "travel"}
    (out,) = FraudTransformer()([request])
    # 24 h back from 13:30 reaches 13:30 the day before: the grocery charge at 12:30 is out (the
    # approximation, counting the windows that ended at the last charge, had it in)
    assert (out["tx_count_1h"], out["tx_count_24h"], out["amount_sum_24h"]) == (1.0, 2.0, 70.0)
    assert out["amount_mean_7d"] == pytest.approx(100 / 4) and out["category_freq_7d"] == pytest.approx(3 / 4)
    assert out["secs_since_prev"] == 5_400 and out["dist_prev_km"] == 0.0
    (old,) = fraud_transactions([{k: v for k, v in request.items() if k not in ("recent_7d", "as_of")}])
    assert old["tx_count_24h"] == 1.0  # no counts in the state: the approximation, as documented


def test_a_servers_earlier_transactions_count_until_the_etl_publishes_them_and_a_retry_counts_once():
    transformer = FraudTransformer()
    first = {**STATE, "amount": 5.0, "ts": NOON + 600, "lat": 48.14, "lon": 11.58, "category": "grocery"}
    second = {**STATE, "amount": 7.0, "ts": NOON + 1_200, "lat": 48.14, "lon": 11.58, "category": "grocery"}
    transformer([first])
    transformer([first])  # a client's retry of the same transaction
    (out,) = transformer([second])
    assert (out["tx_count_1h"], out["amount_sum_24h"]) == (3.0, 30.0 + 5.0 + 7.0 + 20.0)
    assert out["secs_since_prev"] == 600 and out["dist_prev_km"] == 0.0  # from the first, in Munich
    published = {**second, "last_ts": float(NOON + 600), "recent_7d": json.dumps(
        [*json.loads(STATE["recent_7d"]), {"s": NOON + 600, "a": 5.0, "c": "grocery", "la": 48.14,
                                           "lo": 11.58}])}  # fmt: skip
    (after,) = transformer([published])  # the ETL caught up: the state holds the first, once
    assert (after["tx_count_1h"], after["amount_sum_24h"]) == (3.0, 62.0) and after["dist_prev_km"] == 0.0
    past = {
        **STATE,
        "amount": 20.0,
        "ts": NOON - 86_400 + 1_800,
        "lat": 50.0,
        "lon": 8.0,
        "category": "grocery",
    }
    (replayed,) = FraudTransformer()([past])  # a published transaction sent again: as the ETL saw it
    assert (replayed["tx_count_24h"], replayed["secs_since_prev"]) == (1.0, 5 * 86_400 + 1_800)
    assert replayed["dist_prev_km"] == pytest.approx(_haversine_km(52.52, 13.40, 50.0, 8.0))
    (fresh,) = FraudTransformer()([second])  # another server saw none of it
    assert fresh["tx_count_1h"] == 2.0


def test_the_profile_is_moved_to_the_transactions_day():
    (out,) = FraudTransformer()([{**STATE, "amount": 1.0, "ts": NOON + 3 * 86_400}])
    assert out["days_to_expiry"] == 397 and out["age_years"] == pytest.approx(40 + 3 / 31 / 12)


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
            "recent_7d": JSON | st.just('[{"s": 1764547200, "a": 3.5, "c": "travel"}]') | st.just("[1]"),
            "as_of": JSON | st.just("2025-12-01T00:00:00+00:00"),
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
