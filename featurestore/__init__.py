"""Fjord's feature store: feature groups, feature views and training datasets on the shared filesystem.

The API follows the Hopsworks feature store client (hsfs)::

    import featurestore
    fs = featurestore.connect(project="fraud")
    fg = fs.get_or_create_feature_group("card_transactions_4h", version=1, primary_key=["cc_num"],
                                        event_time="ts", online_enabled=True)
    commit = fg.insert(df)
    q = labels_fg.select_all().join(fg.select(["amount_sum_4h"]), on=["cc_num"])
    fv = fs.get_or_create_feature_view("fraud", 1, query=q, labels=["is_fraud"])
    version, job = fv.create_training_data()
    X, y = fv.get_training_data(version)

Offline data is Delta Lake on the shared filesystem (:mod:`featurestore.offline`), joins run on DuckDB
or Spark (:mod:`featurestore.engines`), online values live in SQLite or Redis
(:mod:`featurestore.online`), metadata in the registry (:mod:`featurestore.registry`).
"""

from featurestore.errors import FeatureStoreError, FeatureStorePermissionError, SchemaError
from featurestore.feature_group import FeatureGroup
from featurestore.feature_view import FeatureView
from featurestore.query import Query
from featurestore.schema import Feature
from featurestore.store import FeatureStore, connect

__all__ = [
    "Feature",
    "FeatureGroup",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStorePermissionError",
    "FeatureView",
    "Query",
    "SchemaError",
    "connect",
]
