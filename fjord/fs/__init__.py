"""One filesystem interface over ``file://``, ``hdfs://`` and ``s3://``, chosen by URI scheme.

>>> from fjord.fs import SharedFS
>>> root = SharedFS("file:///tmp/fjord-doc")
>>> with root.publish("datasets/a") as out:
...     out.write_text("part-0.csv", "x\\n1\\n")
>>> root.is_published("datasets/a")
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fjord.fs.backends import (
    FILESYSTEMS,
    Backend,
    arrow_scan,
    backend_for,
    delta_scan,
    local_path,
    object_store_options,
    register_backend,
    spark_uri,
    spark_uris,
)
from fjord.fs.shared import SUCCESS, SharedFS

if TYPE_CHECKING:
    from fjord.config import Settings

__all__ = [
    "FILESYSTEMS",
    "SUCCESS",
    "Backend",
    "SharedFS",
    "arrow_scan",
    "backend_for",
    "delta_scan",
    "local_path",
    "object_store_options",
    "register_backend",
    "shared_root",
    "spark_uri",
    "spark_uris",
]


def shared_root() -> SharedFS:
    """The configured shared filesystem root (``storage.root``)."""
    return SharedFS(storage_root())


def storage_root(settings: Settings | None = None) -> str:
    """``storage.root``; in the cluster profile, when unset, the cluster's HDFS (started if needed)."""
    from fjord.config import get_settings

    settings = settings or get_settings()
    if settings.storage.root is None:
        from fjord.cluster import resolve

        return resolve(settings).storage.root or ""
    return settings.storage.root
