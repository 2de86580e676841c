"""The script of a process that aborted at exit (exit 134, "terminate called without an active
exception"): two inserts into a group, then a read. ``python -m tests.integration.insert_twice_worker
GROUP``, in the project ``fraud`` of ``FJORD_HOME``; prints the rows read."""

from __future__ import annotations

import sys

import pandas as pd

import featurestore

T0 = pd.Timestamp("2026-11-01", tz="UTC")


def main(group: str) -> None:
    store = featurestore.connect("fraud")
    fg = store.get_or_create_feature_group(group, 1, primary_key=["k"], event_time="ts", online_enabled=True)
    fg.insert(pd.DataFrame({"k": [1, 2], "ts": [T0, T0], "x": [1.0, 2.0]}))
    fg.insert(pd.DataFrame({"k": [1, 3], "ts": [T0 + pd.Timedelta(hours=1)] * 2, "x": [3.0, 4.0]}))
    print(len(fg.read()))


if __name__ == "__main__":
    main(sys.argv[1])
