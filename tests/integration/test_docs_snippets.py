"""docs/featurestore.md's snippet, run as written on a small data set: its calls work, and the values
its comments promise are the ones returned."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fjord.projects import create_project

REPO = Path(__file__).resolve().parents[2]


def _snippet(doc: str) -> str:
    text = (REPO / doc).read_text()
    return re.search(r"^```python\n(.*?)^```$", text, re.S | re.M).group(1)


def test_the_feature_store_guide_runs_as_written() -> None:
    import featurestore

    create_project("fraud")
    create_project("risk")
    store = featurestore.connect("fraud")
    times = pd.to_datetime(["2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z", "2026-11-01T12:00:00Z"])
    labels_fg = store.get_or_create_feature_group("fraud_labels", 1, primary_key=["tid"], event_time="ts")
    labels_fg.insert(pd.DataFrame({"tid": [1, 2, 3], "cc_num": [4111, 4111, 2], "ts": times,
                                   "is_fraud": [0, 1, 0]}))  # fmt: skip
    profiles_fg = store.get_or_create_feature_group(
        "profiles", 1, primary_key=["cc_num"], event_time="as_of", online_enabled=True
    )
    as_of = pd.to_datetime(["2026-10-01"] * 3, utc=True)
    profiles_fg.insert(pd.DataFrame({"cc_num": [4111, 1, 2], "as_of": as_of, "age": [41, 30, 52]}))
    df = pd.DataFrame({"cc_num": [4111, 1, 2], "ts": pd.to_datetime(["2026-11-01T09:00:00Z"] * 3),
                       "amount_sum_4h": [20.0, 5.0, 7.5], "tx_count_4h": [2, 1, 1]})  # fmt: skip
    names = {"df": df, "labels_fg": labels_fg, "profiles_fg": profiles_fg}
    exec(compile(_snippet("docs/featurestore.md"), "docs/featurestore.md", "exec"), names)
    # as its comment says: the join column from the request, the rest from the online store (the
    # offline label group serves nothing online)
    assert names["fv"].features == ["cc_num", "amount_sum_4h", "tx_count_4h", "p_age"]
    assert names["fv"].get_feature_vector({"cc_num": 4111}) == [4111, 20.0, 2, 41]
    assert len(names["X"]) == 3 and list(names["y"].columns) == ["is_fraud"]
