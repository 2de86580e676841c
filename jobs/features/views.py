"""Feature view definitions: which groups' features a model reads, joined how, with which labels.

A definition is data (:class:`ViewDefinition`), kept in code (:data:`BUILT_IN`) or in a YAML file a
project keeps beside its code::

    name: fraud_demo
    version: 1
    labels: [is_fraud]
    base: {group: fraud_labels, features: [is_fraud]}
    joins:
      - {group: transactions_features, features: [amount, tx_count_1h], keys: [tid]}
      - {group: profile_features, features: [age_years], keys: [cc_num]}

The base group's rows are the training rows (one per label); each join brings the features of the
joined group as of each row's event time (point in time, no look-ahead).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fjord.errors import ConfigError


class Selection(BaseModel):
    """Features of one feature group, and (for a join) the keys it joins on."""

    model_config = ConfigDict(extra="forbid")

    group: str
    version: int = Field(default=1, ge=1)
    features: list[str] = Field(min_length=1)
    keys: list[str] | None = Field(default=None, description="the join keys (joins only)")


class ViewDefinition(BaseModel):
    """A feature view: a base selection, point-in-time joins, and labels."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(default=1, ge=1)
    description: str = ""
    labels: list[str] = Field(default_factory=list)
    base: Selection
    joins: list[Selection] = Field(default_factory=list)


FRAUD_DEMO = ViewDefinition(
    name="fraud_demo",
    description="Card fraud: labels at transaction time, card window features, card holder profile",
    labels=["is_fraud"],
    base=Selection(group="fraud_labels", features=["is_fraud"]),
    joins=[
        Selection(
            group="transactions_features",
            keys=["tid"],
            features=[
                "amount",
                "tx_count_1h",
                "tx_count_24h",
                "amount_sum_24h",
                "amount_mean_7d",
                "secs_since_prev",
                "dist_prev_km",
                "speed_prev_kmh",
                "category_freq_7d",
                "hour",
                "is_night",
            ],
        ),
        Selection(group="profile_features", keys=["cc_num"], features=["age_years", "days_to_expiry"]),
    ],
)
# What the model server reads online for a card: its latest state (card_features: its last 7 days of
# transactions) and its holder's profile (and the day it was computed), both keyed by cc_num;
# jobs/serve/transformers.py turns them and a request into model inputs, by the ETL's definitions.
FRAUD_SERVING = ViewDefinition(
    name="fraud_serving",
    description="Card fraud at serving time: each card's latest state and its holder's profile, by cc_num",
    base=Selection(
        group="card_features",
        features=[
            "last_ts",
            "last_lat",
            "last_lon",
            "tx_count_1h",
            "tx_count_24h",
            "amount_sum_24h",
            "tx_count_7d",
            "amount_sum_7d",
            "category_counts_7d",
            "recent_7d",
        ],
    ),
    joins=[
        Selection(
            group="profile_features", keys=["cc_num"], features=["age_years", "days_to_expiry", "as_of"]
        )
    ],
)
BUILT_IN = {view.name: view for view in (FRAUD_DEMO, FRAUD_SERVING)}


def load_definition(path: Path) -> ViewDefinition:
    """The definition in the YAML file ``path``; a :class:`ConfigError` naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the feature view definition ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return ViewDefinition.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "the file"
        raise ConfigError(f"{path}: {where}: {error['msg']}") from None
