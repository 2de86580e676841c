"""The feature store's own errors (all :class:`fjord.errors.FjordError`, so the CLI prints one line)."""

from fjord.errors import FjordError


class FeatureStoreError(FjordError):
    """Bad input to the feature store: the store is left unchanged."""

    exit_code = 8


class SchemaError(FeatureStoreError, ValueError):
    """Data that does not match a feature group's schema, or an incompatible schema change."""


class FeatureStorePermissionError(FeatureStoreError, PermissionError):
    """Reading another project's feature group that was not shared, or writing to one."""

    exit_code = 5


class UnknownCommitsError(FeatureStoreError):
    """A feature group's table holds commits this metadata database did not make (another database,
    or an older copy of this one, wrote them). Nothing is changed: adopt them, or point
    ``metadata.url`` at the database that made them."""

    exit_code = 17
