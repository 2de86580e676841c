"""Request transformers: a transaction as the client knows it -> the model's inputs.

A fraud check arrives as a transaction (card number, amount, time, place, category), not as the
model's 13 engineered features. The server looks up the card's latest state and its holder's profile
in the online store (the ``fraud_serving`` feature view, one batched read per request) and hands each
row, request values merged over looked-up ones, to :data:`fraud_transactions`, which computes what
the ETL job (jobs/etl/fraud.py, ``transaction_features``) computes for the same transaction in a batch,
by the same definitions:

- windows (``tx_count_1h``, ``tx_count_24h``, ``amount_sum_24h``, ``amount_mean_7d``,
  ``category_freq_7d``): over the card's transactions whose second is at most the span before this
  one's, this one included, as Spark's ``rangeBetween(-span, 0)`` over epoch seconds counts them. The
  card's transactions come from its state's ``recent_7d`` (those the ETL published: 7 days before its
  last one) and from the transactions this server served since (:class:`ServedTransactions`: the
  ETL has not seen them yet, and its next batch will count them);
- ``secs_since_prev``, ``dist_prev_km``, ``speed_prev_kmh`` from the card's previous transaction;
- ``hour`` and ``is_night`` from the time (UTC);
- ``age_years`` and ``days_to_expiry`` from the profile, moved on by the days from the profile's
  ``as_of`` to the transaction's day (the ETL computes them as of each batch's day).

Measured against the ETL row by row (``fjord monitor skew``, docs/monitoring.md). A state published
before ``recent_7d`` existed falls back to the old approximation (the windows as of the card's last
transaction; a window that ended before the request counts as empty).

An unknown card gets the documented defaults: this is its first transaction (counts 1, sums the
amount, category frequency 1), with no previous time or place and no profile (NaN: the model fills
missing values with its training means). Never an error.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson

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


def _approximate(row: dict[str, Any], amount: float, now: float) -> dict[str, float]:
    """The windows as of the card's last transaction (a state without ``recent_7d``)."""
    last = _number(row, "last_ts")
    gap = max(now - last, 0.0) if not math.isnan(last) else math.inf

    def within(span: float, value: Any, gap: float = gap) -> float:
        return float(value) if value is not None and gap <= span else 0.0

    count_7d = 1 + within(WEEK, row.get("tx_count_7d"))
    counts = json.loads(row["category_counts_7d"]) if row.get("category_counts_7d") and gap <= WEEK else {}
    category = row.get("category")
    place = (_number(row, "last_lat"), _number(row, "last_lon"), _number(row, "lat"), _number(row, "lon"))
    distance = _haversine_km(*place) if gap != math.inf else math.nan
    return {
        "tx_count_1h": 1 + within(HOUR, row.get("tx_count_1h")),
        "tx_count_24h": 1 + within(DAY, row.get("tx_count_24h")),
        "amount_sum_24h": amount + within(DAY, row.get("amount_sum_24h")),
        "amount_mean_7d": (amount + within(WEEK, row.get("amount_sum_7d"))) / count_7d,
        "secs_since_prev": gap if gap != math.inf else math.nan,
        "dist_prev_km": distance,
        "speed_prev_kmh": distance / (max(gap, 60) / 3600) if gap != math.inf else math.nan,
        "category_freq_7d": (1 + counts.get(category, 0)) / count_7d if category else math.nan,
    }


Tx = tuple[int, float, Any, Any, Any]  # (epoch second, amount, category, lat, lon as stored)


def _coordinate(value: Any) -> float:
    return float(value) if value is not None and not isinstance(value, bool) else math.nan


def _history(row: dict[str, Any]) -> list[Tx]:
    """The card's published transactions (``recent_7d``), oldest first, with their places (parsed
    with orjson, and a place turned into a number only for the one previous transaction: this runs
    per row of every request)."""
    entries = orjson.loads(row["recent_7d"]) if isinstance(row["recent_7d"], str) else row["recent_7d"]
    if not isinstance(entries, list):
        raise ValueError("recent_7d is not a list of transactions")
    try:
        return [(int(e["s"]), float(e["a"]), e.get("c"), e.get("la"), e.get("lo")) for e in entries]
    except AttributeError:
        raise ValueError("recent_7d holds something other than a transaction") from None


def _exact(this: Tx, earlier: list[Tx]) -> dict[str, float]:
    """The ETL's window features of ``this`` among the card's ``earlier`` transactions (one pass)."""
    second, amount, category, lat, lon = this
    count_1h = count_24h = count_7d = 1
    sum_24h = sum_7d = amount
    same_category = 1
    previous: Tx | None = None
    for t in earlier:
        at = t[0]
        if at > second:
            continue  # later than this one: not in its windows
        if previous is None or at > previous[0]:
            previous = t
        if at >= second - WEEK:
            count_7d += 1
            sum_7d += t[1]
            same_category += t[2] == category
            if at >= second - DAY:
                count_24h += 1
                sum_24h += t[1]
                count_1h += at >= second - HOUR
    gap = float(second - previous[0]) if previous else math.nan
    distance = (
        _haversine_km(_coordinate(previous[3]), _coordinate(previous[4]), lat, lon) if previous else math.nan
    )
    return {
        "tx_count_1h": float(count_1h),
        "tx_count_24h": float(count_24h),
        "amount_sum_24h": sum_24h,
        "amount_mean_7d": sum_7d / count_7d,
        "secs_since_prev": gap,
        "dist_prev_km": distance,
        "speed_prev_kmh": distance / (max(gap, 60) / 3600) if previous else math.nan,
        "category_freq_7d": same_category / count_7d if category else math.nan,
    }


class ServedTransactions:
    """The transactions this server served since the online state it read: what the ETL has not
    published yet. Per card, those after its state's last transaction, within the widest window of the
    newest; a transaction served twice (a client's retry: same second, amount and category) is kept
    once. At most ``max_cards`` cards, the least recently served dropped first. One per server
    process: replicas of a serving each know only their own traffic (docs/serving.md)."""

    def __init__(self, max_cards: int = 200_000) -> None:
        self.max_cards = max_cards
        self._cards: OrderedDict[Any, list[Tx]] = OrderedDict()
        self._lock = threading.Lock()

    def since(self, card: Any, last_second: float) -> list[Tx]:
        with self._lock:
            return [t for t in self._cards.get(card, ()) if t[0] > last_second]

    def add(self, card: Any, tx: Tx, last_second: float) -> None:
        with self._lock:
            kept = [t for t in self._cards.pop(card, []) if t[0] > last_second and t[0] >= tx[0] - WEEK]
            if not any(t[:3] == tx[:3] for t in kept):
                kept.append(tx)
            self._cards[card] = sorted(kept, key=lambda t: t[0])
            while len(self._cards) > self.max_cards:
                self._cards.popitem(last=False)


class FraudTransformer:
    """The fraud model's inputs of each transaction row (request values and the card's online state);
    see the module docstring."""

    def __init__(self, served: ServedTransactions | None = None) -> None:
        self.served = served if served is not None else ServedTransactions()

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            missing = [name for name in REQUIRED if row.get(name) is None]
            if missing:
                raise ValueError(f"a transaction needs {', '.join(REQUIRED)}; missing {', '.join(missing)}")
            amount, now = float(row["amount"]), _epoch(row["ts"])
            if "recent_7d" in row:
                windows = self._windows(row, amount, now)
            else:
                windows = _approximate(row, amount, now)
            hour = datetime.fromtimestamp(now, UTC).hour
            out.append({"amount": amount, **windows, "hour": float(hour), "is_night": float(hour < 5),
                        **_profile(row, now)})  # fmt: skip
        return out

    def _windows(self, row: dict[str, Any], amount: float, now: float) -> dict[str, float]:
        category = row.get("category")
        this: Tx = (math.floor(now), amount, category if isinstance(category, str) else None,
                    _number(row, "lat"), _number(row, "lon"))  # fmt: skip
        published = _history(row) if row.get("recent_7d") is not None else []
        last = published[-1][0] if published else -math.inf
        earlier = [t for t in published if t[:3] != this[:3]]  # a published transaction served again
        if len(earlier) < len(published) - 1:
            earlier = published[: len(published) - 1]  # the same one many times: keep the others
        card = row.get("cc_num")
        served = self.served.since(card, last) if card is not None else []
        windows = _exact(this, earlier + [t for t in served if t[:3] != this[:3]])
        if card is not None and this[0] > last:
            self.served.add(card, this, last)
        return windows


def _profile(row: dict[str, Any], now: float) -> dict[str, float]:
    """The profile's features moved from its ``as_of`` day to the transaction's (as the ETL would
    compute them for that day: days to expiry fewer by the days, age older by them, in months of 31
    days as Spark's months_between counts)."""
    age, expiry = _number(row, "age_years"), _number(row, "days_to_expiry")
    as_of = row.get("as_of")
    if as_of is None:
        return {"age_years": age, "days_to_expiry": expiry}
    day = datetime.fromtimestamp(_epoch(as_of.isoformat() if isinstance(as_of, datetime) else as_of), UTC)
    days = (datetime.fromtimestamp(now, UTC).date() - day.date()).days
    return {"age_years": age + days / 31 / 12, "days_to_expiry": expiry - days}


fraud_transactions = FraudTransformer()
