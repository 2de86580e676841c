"""The Feast side of ``bench/featurestore.py``. Runs inside Feast's own venv (bench/.venv-feast).

    python bench/feast_peer.py historical DATA_DIR      # point-in-time retrieval, DuckDB offline store
    python bench/feast_peer.py online DATA_DIR N        # online lookups on Redis after materialize

Prints one JSON line of results. Feast's DuckDB offline store is used: its file/Dask store silently
drops entity rows whose features are all outside the TTL (shared/STACK_NOTES.md).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64
from peer_metrics import (  # bench/peer_metrics.py: this script runs from bench/
    measure,
    retrieval_summary,
    retrieve_twice,
)

FEATURES_PER_GROUP = 10


def _repo(data: Path, online_suffix: str = "") -> FeatureStore:
    repo = data / f"feast-repo{online_suffix}"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: fjordbench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: redis\n  connection_string: {os.environ['FEAST_REDIS']},db=0\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo))
    card = Entity(name="cc_num", join_keys=["cc_num"], value_type=ValueType.INT64)
    views = []
    for group in ("a", "b"):
        source = FileSource(path=str(data / f"tx_{group}{online_suffix}.parquet"), timestamp_field="ts")
        views.append(
            FeatureView(
                name=f"tx_{group}",
                entities=[card],
                ttl=timedelta(days=3650),  # no staleness bound: the same semantics as Fjord's default
                schema=[Field(name=f"{group}{i}", dtype=Float64) for i in range(FEATURES_PER_GROUP)],
                source=source,
                online=True,
            )
        )
    store.apply([card, *views])
    return store


def _features() -> list[str]:
    return [f"tx_{g}:{g}{i}" for g in ("a", "b") for i in range(FEATURES_PER_GROUP)]


def historical(data: Path, dataframe: bool = False) -> dict[str, float]:
    """``get_historical_features`` to Arrow, or (``dataframe``) to pandas with ``to_df()``: the
    training DataFrame a Feast user asks for, set beside Fjord's training-dataset path."""
    store = _repo(data)
    labels = pq.read_table(data / "labels.parquet").to_pandas()
    labels["ts"] = labels["ts"].astype("datetime64[us, UTC]")

    def retrieve() -> Any:
        job = store.get_historical_features(entity_df=labels, features=_features())
        return job.to_df() if dataframe else job.to_arrow()

    result, cold, warm = retrieve_twice(retrieve)
    table = pa.Table.from_pandas(result, preserve_index=False) if dataframe else result  # not timed
    return retrieval_summary(table, cold, warm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def online(data: Path, lookups: int) -> dict[str, float]:
    store = _repo(data, online_suffix="_latest")
    frame = pd.read_parquet(data / "tx_a_latest.parquet")
    store.materialize(
        frame.ts.min().to_pydatetime() - timedelta(seconds=1),
        frame.ts.max().to_pydatetime() + timedelta(seconds=1),
    )
    keys = np.random.default_rng(7).choice(frame.cc_num.to_numpy(), size=lookups)
    features = _features()
    result = measure(
        lambda key: store.get_online_features(features=features, entity_rows=[{"cc_num": key}]).to_dict(),
        lambda chunk: store.get_online_features(
            features=features, entity_rows=[{"cc_num": k} for k in chunk]
        ).to_dict(),
        keys,
    )
    check = store.get_online_features(features=features, entity_rows=[{"cc_num": int(keys[0])}]).to_dict()
    store.teardown()  # leave the shared Redis as we found it
    return {**result, "check_key": int(keys[0]), "check_a0": check["a0"][0]}


if __name__ == "__main__":
    command, data_dir = sys.argv[1], Path(sys.argv[2])
    if command.startswith("historical"):
        result = historical(data_dir, dataframe=command == "historical-df")
    else:
        result = online(data_dir, int(sys.argv[3]))
    print(json.dumps(result))
