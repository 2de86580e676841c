"""One filesystem interface over ``file://``, ``hdfs://`` and ``s3://``, chosen by URI scheme.

>>> from fjord.fs import SharedFS
>>> root = SharedFS("file:///tmp/fjord-doc")
>>> with root.publish("datasets/a") as out:
...     out.write_text("part-0.csv", "x\\n1\\n")
>>> root.is_published("datasets/a")
True
"""

from fjord.fs.backends import (
    FILESYSTEMS,
    Backend,
    arrow_scan,
    backend_for,
    local_path,
    object_store_options,
    register_backend,
    spark_uri,
    spark_uris,
)
from fjord.fs.shared import SUCCESS, SharedFS

__all__ = [
    "FILESYSTEMS",
    "SUCCESS",
    "Backend",
    "SharedFS",
    "arrow_scan",
    "backend_for",
    "local_path",
    "object_store_options",
    "register_backend",
    "shared_root",
    "spark_uri",
    "spark_uris",
]


def shared_root() -> SharedFS:
    """The configured shared filesystem root (``storage.root``)."""
    from fjord.config import get_settings

    root = get_settings().storage.root
    assert root is not None  # filled in by Settings
    return SharedFS(root)
