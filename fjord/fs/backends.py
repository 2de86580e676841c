"""Filesystem backends, chosen by URI scheme.

A backend turns a URI into an fsspec filesystem plus the path that filesystem understands, and says
whether directory renames are atomic (they are on local disks and HDFS, not on S3). Register another
scheme with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import fsspec

from fjord.config import StorageSettings, get_settings
from fjord.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    """How one URI scheme is reached."""

    scheme: str
    fs: fsspec.AbstractFileSystem
    atomic_rename: bool
    # The scheme Spark's Hadoop filesystem layer knows this storage by (s3 -> s3a).
    spark_scheme: str

    def to_path(self, uri: str) -> str:
        """The filesystem-native path of ``uri``."""
        parts = urlsplit(uri)
        if self.scheme == "file":
            return parts.path or "/"
        if self.scheme == "s3":
            return f"{parts.netloc}{parts.path}".rstrip("/")
        return parts.path or "/"

    def to_uri(self, path: str, authority: str) -> str:
        """The URI of the filesystem-native ``path``."""
        if self.scheme == "s3":
            return f"s3://{path}"
        return f"{self.scheme}://{authority}{path}"


BackendFactory = Callable[[str, StorageSettings], Backend]
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``scheme://`` URIs reachable through ``factory(authority, storage_settings)``."""
    _FACTORIES[scheme] = factory


def _local(authority: str, settings: StorageSettings) -> Backend:
    if authority not in ("", "localhost"):
        raise ConfigError(f"file:// URIs name no host, got file://{authority}/...")
    return Backend(
        "file", fsspec.filesystem("file", auto_mkdir=True), atomic_rename=True, spark_scheme="file"
    )


def _hdfs(authority: str, settings: StorageSettings) -> Backend:
    host, _, port = authority.partition(":")
    fs = fsspec.filesystem("hdfs", host=host or "default", port=int(port or 8020), user=settings.hdfs_user)
    return Backend("hdfs", fs, atomic_rename=True, spark_scheme="hdfs")


def _s3(authority: str, settings: StorageSettings) -> Backend:
    client = {"endpoint_url": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}
    fs = fsspec.filesystem(
        "s3", key=settings.s3_key, secret=settings.s3_secret, client_kwargs=client, use_listings_cache=False
    )
    return Backend("s3", fs, atomic_rename=False, spark_scheme="s3a")


register_backend("file", _local)
register_backend("hdfs", _hdfs)
register_backend("s3", _s3)


def backend_for(uri: str, settings: StorageSettings | None = None) -> Backend:
    """The backend serving ``uri``, by its scheme."""
    scheme = urlsplit(uri).scheme
    if scheme not in _FACTORIES:
        raise ConfigError(
            f"unsupported filesystem URI {uri!r}: scheme must be one of {', '.join(sorted(_FACTORIES))}"
        )
    storage = settings or get_settings().storage
    return _cached_backend(scheme, urlsplit(uri).netloc, storage.model_dump_json())


@cache
def _cached_backend(scheme: str, authority: str, settings_json: str) -> Backend:
    return _FACTORIES[scheme](authority, StorageSettings.model_validate_json(settings_json))
