"""Realistic synthetic card transactions, landed as an upstream system would land them.

``fjord demo data --project fraud --rows N --days D --seed S`` writes one batch per day into the
project's ``Resources/landing/<date>/``:

- ``transactions``: tid, cc_num, ts, amount, category, city, lat, lon, channel;
- ``labels``: tid, is_fraud, reported_at (fraud is reported days later, as real labels are);
- ``profiles``: cc_num, birthdate, city, cc_provider, cc_type, cc_expiry (the cards known that day).

Each batch is published atomically and finished with ``_SUCCESS``. Generation is vectorised per day,
so memory stays bounded by one day's rows, and it is deterministic per seed.

About 1% of transactions are fraud, in three learnable patterns:

- **card testing**: a burst of 3 to 6 small online charges within 30 minutes, then one in a risky
  category (electronics, jewellery, gift cards);
- **impossible travel**: a charge in a city far from the card's previous charge, within the hour;
- **night-time spending**: risky categories between 01:00 and 04:00.

Fraud amounts are drawn like legitimate amounts of the same category, so the amount alone says little.

A model on the engineered features (counts and sums over windows, speed from the previous location,
hour and category) separates these far better than one on the raw amount alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fjord.errors import AlreadyExistsError
from fjord.fs import SharedFS

LANDING = "Resources/landing"
SPEC_FILE = "_demo_spec.json"  # how a rerun knows it landed a batch
CITIES = [
    ("New York", 40.71, -74.01),
    ("Los Angeles", 34.05, -118.24),
    ("Chicago", 41.88, -87.63),
    ("Houston", 29.76, -95.37),
    ("Phoenix", 33.45, -112.07),
    ("Philadelphia", 39.95, -75.17),
    ("San Antonio", 29.42, -98.49),
    ("San Diego", 32.72, -117.16),
    ("Dallas", 32.78, -96.80),
    ("Seattle", 47.61, -122.33),
    ("Denver", 39.74, -104.99),
    ("Boston", 42.36, -71.06),
    ("Miami", 25.76, -80.19),
    ("Atlanta", 33.75, -84.39),
    ("Minneapolis", 44.98, -93.27),
    ("Portland", 45.52, -122.68),
    ("Detroit", 42.33, -83.05),
    ("Las Vegas", 36.17, -115.14),
    ("Anchorage", 61.22, -149.90),
    ("Honolulu", 21.31, -157.86),
]
CATEGORIES = [
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "retail",
    "travel",
    "entertainment",
    "electronics",
    "jewelry",
    "gift_card",
]
NORMAL_CATEGORY_P = np.array([0.25, 0.2, 0.15, 0.08, 0.14, 0.05, 0.08, 0.03, 0.01, 0.01])
RISKY = [CATEGORIES.index(c) for c in ("electronics", "jewelry", "gift_card")]
MEDIAN_AMOUNT = np.array([45, 30, 40, 25, 60, 300, 50, 250, 400, 100], dtype=float)
CHANNELS = ["pos", "online", "atm"]
PROVIDERS = ["visa", "mastercard", "amex", "discover"]
CARD_TYPES = ["credit", "debit", "prepaid"]

TRANSACTION_SCHEMA = pa.schema(
    [
        ("tid", pa.int64()),
        ("cc_num", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("amount", pa.float64()),
        ("category", pa.string()),
        ("city", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("channel", pa.string()),
    ]
)


def recent_start(days: int, today: date | None = None) -> date:
    """The first date of ``days`` daily batches that end yesterday (UTC): demo data a daily schedule,
    a DAG's default window and a retraining window over the last 90 days all find."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=days)


@dataclass(frozen=True)
class DemoSpec:
    rows: int = 100_000
    days: int = 7
    seed: int = 42
    start: date = date(2026, 11, 1)
    fmt: str = "parquet"  # or "csv"

    @property
    def cards(self) -> int:
        return max(200, self.rows // (3 * self.days))  # about 3 transactions per card and day


def _profiles(spec: DemoSpec) -> pa.Table:
    rng = np.random.default_rng([spec.seed, 0])
    n = spec.cards
    cc_num = 4_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 7_919
    birth = np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n).astype("timedelta64[D]")
    expiry = np.datetime64(spec.start.isoformat()) + rng.integers(-60, 365 * 5, n).astype("timedelta64[D]")
    return pa.table(
        {
            "cc_num": cc_num,
            "birthdate": pa.array(birth, pa.date32()),
            "city": pa.array([CITIES[i][0] for i in rng.integers(0, len(CITIES), n)]),
            "cc_provider": pa.array([PROVIDERS[i] for i in rng.choice(4, n, p=[0.5, 0.3, 0.12, 0.08])]),
            "cc_type": pa.array([CARD_TYPES[i] for i in rng.choice(3, n, p=[0.6, 0.35, 0.05])]),
            "cc_expiry": pa.array(expiry, pa.date32()),
        }
    )


def _day(spec: DemoSpec, day: int, profiles: pa.Table) -> tuple[pa.Table, pa.Table]:
    """One day's transactions and labels (deterministic in seed and day)."""
    rng = np.random.default_rng([spec.seed, 1, day])
    n_cards = profiles.num_rows
    home = np.array([[c[0] for c in CITIES].index(c) for c in profiles.column("city").to_pylist()])
    base = datetime.combine(spec.start, datetime.min.time(), UTC) + timedelta(days=day)
    day_us = 86_400 * 1_000_000
    n = spec.rows // spec.days

    # Legitimate activity: active cards, daytime-biased times, home city, lognormal amounts.
    # Activity varies by card (lognormal), but no card dominates: real cards make a few charges a day.
    activity = np.random.default_rng([spec.seed, 2]).lognormal(0, 0.5, n_cards)
    card = rng.choice(n_cards, n, p=activity / activity.sum())
    hour = np.clip(rng.normal(14, 4, n), 0, 23.99)
    us = (hour * 3_600_000_000).astype(np.int64)
    category = rng.choice(len(CATEGORIES), n, p=NORMAL_CATEGORY_P)
    amount = np.round(MEDIAN_AMOUNT[category] * rng.lognormal(0, 0.6, n), 2)
    city = np.where(rng.random(n) < 0.97, home[card], rng.integers(0, len(CITIES), n))
    channel = rng.choice(3, n, p=[0.7, 0.25, 0.05])
    fraud = np.zeros(n, dtype=bool)

    parts = [(card, us, amount, category, city, channel, fraud)]
    episodes = max(1, int(n * 0.0015))  # about 1.1% of rows end up fraud
    # Card testing: 3-6 small charges within 30 minutes, then one in a risky category. Fraud amounts
    # are drawn like legitimate ones of the same category: the signal is the pattern, not the amount.
    c = rng.integers(0, n_cards, episodes)
    start = rng.integers(0, day_us - 3_600_000_000, episodes)
    k = rng.integers(3, 7, episodes)
    rep = np.repeat(np.arange(episodes), k + 1)
    pos = np.concatenate([np.arange(m + 1) for m in k])
    last = pos == np.repeat(k, k + 1)
    t_us = start[rep] + pos * rng.integers(60_000_000, 360_000_000, rep.size)
    cat = np.where(
        last, rng.choice(RISKY, rep.size), rng.choice(len(CATEGORIES), rep.size, p=NORMAL_CATEGORY_P)
    )
    amt = np.round(MEDIAN_AMOUNT[cat] * rng.lognormal(np.where(last, 0.0, -1.0), 0.6, rep.size), 2)
    parts.append((c[rep], t_us, amt, cat, home[c[rep]], np.full(rep.size, 1), np.ones(rep.size, bool)))
    # Impossible travel: a legitimate charge at home, then one far away within the hour.
    c = rng.integers(0, n_cards, episodes)
    t0 = rng.integers(0, day_us - 3_600_000_000, episodes)
    far = (home[c] + rng.integers(5, len(CITIES) - 5, episodes)) % len(CITIES)
    for when, where, is_fraud in (
        (t0, home[c], False),
        (t0 + rng.integers(600_000_000, 3_600_000_000, episodes), far, True),
    ):
        cat = rng.choice(len(CATEGORIES), episodes, p=NORMAL_CATEGORY_P)
        amt = np.round(MEDIAN_AMOUNT[cat] * rng.lognormal(0, 0.6, episodes), 2)
        parts.append((c, when, amt, cat, where, np.zeros(episodes, int), np.full(episodes, is_fraud)))
    # Night-time spending on risky categories.
    c = rng.integers(0, n_cards, episodes)
    cat = rng.choice(RISKY, episodes)
    parts.append(
        (
            c,
            rng.integers(3_600_000_000, 4 * 3_600_000_000, episodes),
            np.round(MEDIAN_AMOUNT[cat] * rng.lognormal(0, 0.6, episodes), 2),
            cat,
            home[c],
            np.full(episodes, 1),
            np.ones(episodes, bool),
        )
    )

    card, us, amount, category, city, channel, fraud = (np.concatenate(x) for x in zip(*parts, strict=True))
    us = np.clip(us, 0, day_us - 1)
    order = np.argsort(us, kind="stable")
    card, us, amount, category, city, channel, fraud = (
        x[order] for x in (card, us, amount, category, city, channel, fraud)
    )
    total = card.size
    tid = np.int64(day) * 1_000_000_000 + np.arange(total, dtype=np.int64)
    ts = pa.array(int(base.timestamp() * 1_000_000) + us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    lat = np.array([CITIES[i][1] for i in range(len(CITIES))])[city] + rng.normal(0, 0.05, total)
    lon = np.array([CITIES[i][2] for i in range(len(CITIES))])[city] + rng.normal(0, 0.05, total)
    transactions = pa.table(
        {
            "tid": tid,
            "cc_num": profiles.column("cc_num").to_numpy()[card],
            "ts": ts,
            "amount": amount.astype(float),
            "category": pa.array(np.array(CATEGORIES, dtype=object)[category]),
            "city": pa.array(np.array([c[0] for c in CITIES], dtype=object)[city]),
            "lat": np.round(lat, 5),
            "lon": np.round(lon, 5),
            "channel": pa.array(np.array(CHANNELS, dtype=object)[channel]),
        },
        schema=TRANSACTION_SCHEMA,
    )
    delay = rng.integers(1, 30, total).astype("timedelta64[D]").astype("timedelta64[us]").astype(np.int64)
    labels = pa.table(
        {
            "tid": tid,
            "is_fraud": fraud.astype(np.int64),
            "reported_at": pa.array(int(base.timestamp() * 1_000_000) + us + delay, pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    return transactions, labels


def _write(out: SharedFS, name: str, table: pa.Table, fmt: str) -> None:
    with out.open(f"{name}.{fmt}", "wb") as handle:
        if fmt == "csv":
            pacsv.write_csv(table, handle)
        else:
            pq.write_table(table, handle)


def generate(project_fs: SharedFS, spec: DemoSpec, *, days: Sequence[int] | None = None) -> list[str]:
    """Land ``spec.days`` daily batches in the project (or those of the day indexes ``days``); the
    batch names (dates). A day's data depends on the seed, the day and the rows per day only: the
    first two days of 30,000 rows over 3 days are those of 20,000 rows over 2.

    Landed data is never overwritten (lineage recorded its checksums): a batch this same spec landed
    before is kept as it is, and a batch of the same date landed otherwise is refused, before any
    batch is written.
    """
    if spec.fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be parquet or csv, not {spec.fmt!r}")
    if spec.rows < spec.days or spec.days < 1:
        raise ValueError(f"need at least one row per day (rows={spec.rows}, days={spec.days})")
    chosen = range(spec.days) if days is None else sorted(set(days))
    if any(not 0 <= day < spec.days for day in chosen):
        raise ValueError(f"days must be within 0..{spec.days - 1}, not {list(chosen)}")
    batches = [(spec.start + timedelta(days=day)).isoformat() for day in chosen]
    stamp = json.dumps({**asdict(spec), "start": spec.start.isoformat()}, sort_keys=True)
    landed = set()
    for batch in batches:
        rel = f"{LANDING}/{batch}"
        if not project_fs.is_published(rel):
            continue
        if not project_fs.exists(f"{rel}/{SPEC_FILE}") or project_fs.read_text(f"{rel}/{SPEC_FILE}") != stamp:
            raise AlreadyExistsError(
                f"{project_fs.uri(rel)} is already landed, by other data; landed data is never overwritten",
                hint="land the demo at another --start date, or in another project",
            )
        landed.add(batch)
    profiles = _profiles(spec)
    for day, batch in zip(chosen, batches, strict=True):
        if batch in landed:
            continue  # the same spec landed the same bytes before
        transactions, labels = _day(spec, day, profiles)
        with project_fs.publish(f"{LANDING}/{batch}") as out:
            _write(out, "transactions", transactions, spec.fmt)
            _write(out, "labels", labels, spec.fmt)
            _write(out, "profiles", profiles, spec.fmt)
            out.write_text(SPEC_FILE, stamp)
    return batches
