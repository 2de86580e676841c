"""Request transformers: a transaction as the client knows it -> the model's inputs.

A fraud check arrives as a transaction (card number, amount, time, place, category), not as the
model's 13 engineered features. The server looks up the card's latest state and its holder's profile
in the online store (the ``fraud_serving`` feature view, one batched read per request) and hands each
row, request values merged over looked-up ones, to :func:`fraud_transactions`, which computes what
the ETL job computes for a transaction in a batch:

- windows: the card's counts and sums as of its last known transaction, plus this one; a window that
  ended before the request counts as empty (an approximation: the stored counts are those of windows
  ending at the last transaction, not at this one);
- ``secs_since_prev``, ``dist_prev_km``, ``speed_prev_kmh`` from the card's last time and place;
- ``category_freq_7d`` from the card's category counts; ``hour`` and ``is_night`` from the time (UTC);
- ``age_years`` and ``days_to_expiry`` from the profile.

An unknown card gets the documented defaults: this is its first transaction (counts 1, sums the
amount, category frequency 1), with no previous time or place and no profile (NaN: the model fills
missing values with its training means). Never an error.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

HOUR, DAY, WEEK = 3_600, 86_400, 7 * 86_400
REQUIRED = ("cc_num", "amount", "ts")
_YEAR_10000 = 253_402_300_800  # epoch seconds of 10000-01-01: datetime's limit


def _epoch(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < _YEAR_10000:
            raise ValueError(f"ts {value!r} is not epoch seconds from 1970 to year 9999")
        return float(value)
    if isinstance(value, str):
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    raise ValueError(f"ts {value!r} is neither epoch seconds nor an ISO 8601 time")


def _number(row: dict[str, Any], name: str) -> float:
    value = row.get(name)
    return float(value) if value is not None and not isinstance(value, bool) else math.nan


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dlat, dlon = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    a = (
        math.sin(dlat / 2) ** 2
        + math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * math.sin(dlon / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def fraud_transactions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fraud model's inputs of each transaction row (request values and the card's online state)."""
    out = []
    for row in rows:
        missing = [name for name in REQUIRED if row.get(name) is None]
        if missing:
            raise ValueError(f"a transaction needs {', '.join(REQUIRED)}; missing {', '.join(missing)}")
        amount, now = float(row["amount"]), _epoch(row["ts"])
        last = _number(row, "last_ts")
        gap = max(now - last, 0.0) if not math.isnan(last) else math.inf

        def within(span: float, value: Any, gap: float = gap) -> float:
            return float(value) if value is not None and gap <= span else 0.0

        count_7d = 1 + within(WEEK, row.get("tx_count_7d"))
        counts = (
            json.loads(row["category_counts_7d"]) if row.get("category_counts_7d") and gap <= WEEK else {}
        )
        category = row.get("category")
        distance = (
            _haversine_km(
                _number(row, "last_lat"), _number(row, "last_lon"), _number(row, "lat"), _number(row, "lon")
            )
            if gap != math.inf
            else math.nan
        )
        hour = datetime.fromtimestamp(now, UTC).hour
        out.append(
            {
                "amount": amount,
                "tx_count_1h": 1 + within(HOUR, row.get("tx_count_1h")),
                "tx_count_24h": 1 + within(DAY, row.get("tx_count_24h")),
                "amount_sum_24h": amount + within(DAY, row.get("amount_sum_24h")),
                "amount_mean_7d": (amount + within(WEEK, row.get("amount_sum_7d"))) / count_7d,
                "secs_since_prev": gap if gap != math.inf else math.nan,
                "dist_prev_km": distance,
                "speed_prev_kmh": distance / (max(gap, 60) / 3600) if gap != math.inf else math.nan,
                "category_freq_7d": (1 + counts.get(category, 0)) / count_7d if category else math.nan,
                "hour": float(hour),
                "is_night": float(hour < 5),
                "age_years": _number(row, "age_years"),
                "days_to_expiry": _number(row, "days_to_expiry"),
            }
        )
    return out
