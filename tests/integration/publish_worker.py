"""A writer process for the publish tests: ``python -m tests.integration.publish_worker MODE DAY [hold]``.

MODE ``one`` inserts day DAY's rows into ``tx``; ``three`` publishes day DAY to ``tx``, ``labels``
and ``profiles`` together; ``dataset`` creates a training dataset of view ``v`` (labels joined with
tx). With ``hold`` it stays inside the publish after the inserts (holding the
leases) until its stdin closes. The environment says where (FJORD_HOME, FJORD_METADATA__URL) and
where to crash (FJORD_CRASH_AT). Prints ``published <commits>`` on success; a wait for a lease is
logged on stderr.
"""

from __future__ import annotations

import logging
import sys

import pandas as pd

import featurestore

T0 = pd.Timestamp("2026-11-01", tz="UTC")
GROUPS = {"tx": True, "labels": False, "profiles": True}  # name -> online enabled


def rows(day: int, offset: float = 0.0) -> pd.DataFrame:
    """Day ``day``'s 50 rows: cards 0-49, one row each, at that day's noon."""
    return pd.DataFrame(
        {
            "cc_num": list(range(50)),
            "ts": [T0 + pd.Timedelta(days=day, hours=12)] * 50,
            "amount": [float(day) + offset + c / 100 for c in range(50)],
        }
    )


def groups(fs: featurestore.FeatureStore) -> dict[str, featurestore.FeatureGroup]:
    return {
        name: fs.get_or_create_feature_group(
            name, 1, primary_key=["cc_num"], event_time="ts", online_enabled=online
        )
        for name, online in GROUPS.items()
    }


def main(mode: str, day: int, hold: bool = False) -> None:
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("featurestore.lease").setLevel(logging.INFO)
    fs = featurestore.connect("fraud")
    targets = groups(fs)
    if mode == "dataset":  # a training dataset of tx joined with labels
        query = (
            targets["labels"]
            .select(["amount"])
            .join(targets["tx"].select(["amount"]), on=["cc_num"], prefix="tx_")
        )
        view = fs.get_or_create_feature_view("v", 1, query=query, labels=["amount"])
        version, _ = view.create_training_data()
        print("published", {"dataset": version})
        return
    names = ["tx"] if mode == "one" else list(GROUPS)
    with fs.publish() as publish:
        for name in names:
            publish.insert(targets[name], rows(day))
        if hold:
            sys.stdin.read()
    print("published", publish.commits)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["hold"])
