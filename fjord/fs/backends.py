"""Filesystem backends, chosen by URI scheme.

A backend turns a URI into an fsspec filesystem plus the path that filesystem understands, and says
whether it is an object store (S3): no atomic rename of a directory and no real directories, so
:class:`fjord.fs.SharedFS` copies trees file by file and treats the ``_SUCCESS`` marker, written last,
as the commit point. The backends are a :class:`fjord.plugins.Registry` keyed by scheme
(``FILESYSTEMS``); register another scheme with :func:`register_backend`. What differs by scheme
is answered here and nowhere else: :func:`local_path`, :func:`object_store_options`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import posixpath
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import fsspec

from fjord.config import StorageSettings, get_settings
from fjord.errors import ConfigError
from fjord.plugins import Registry

log = logging.getLogger(__name__)

# -- fork safety ------------------------------------------------------------------------------------
# A forked child (subprocess with preexec_fn: pyspark starts its JVM that way) runs fsspec's at-fork
# hook, which empties every filesystem class's instance cache. An hdfs-native filesystem that only
# that cache held is then freed in the child, and freeing it shuts down its tokio runtime, which waits
# for threads the child does not have: the child hangs before exec, and the parent with it, forever
# (seen as a test worker that stopped in a SparkSession's start after an hdfs:// test). So the parent
# hands the child a reference to every cached hdfs-native filesystem just before each fork. And an
# unreachable one (a cycle the collector has not reached yet) would be freed by the child's first
# collection, which any allocation in the child can start: so a process that has used hdfs-native
# collects its garbage before each fork, and the child inherits none to free.
_HELD_ACROSS_FORK: list[Any] = []


def _hold_hdfs_filesystems() -> None:
    module = sys.modules.get("hdfs_native.fsspec")
    if module is None:
        return
    held = []
    for cls in (getattr(module, "HdfsFileSystem", None), _RETRYING_HDFS):  # each class its own cache
        held += list((getattr(cls, "_cache", None) or {}).values())
    _HELD_ACROSS_FORK[:] = held
    gc.collect()


_RETRYING_HDFS: Any = None  # the class _hdfs() makes, once hdfs-native is imported
HDFS_WRITE_RETRY_S = 90.0  # about as long as a NameNode takes to declare a killed DataNode dead


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_hdfs_filesystems)


@dataclass(frozen=True)
class Backend:
    """How one URI scheme is reached."""

    scheme: str
    fs: fsspec.AbstractFileSystem
    object_store: bool
    # The scheme Spark's Hadoop filesystem layer knows this storage by (s3 -> s3a).
    spark_scheme: str

    @property
    def local(self) -> bool:
        """Whether paths are on this host's disk (what local-only libraries can open)."""
        return self.scheme == "file"

    def to_path(self, uri: str) -> str:
        """The filesystem-native path of ``uri``."""
        parts = urlsplit(uri)
        if self.scheme == "file":
            return parts.path or "/"
        if self.scheme == "s3":
            return f"{parts.netloc}{parts.path}".rstrip("/")
        return parts.path or "/"

    def remove_tree(self, path: str) -> None:
        """Remove ``path`` and everything under it (no error if it does not exist)."""
        if not self.fs.exists(path):
            return
        if not self.object_store:
            self.fs.rm(path, recursive=True)
            return
        files = self.fs.find(path)
        if files:
            self.fs.rm(files)
        # Servers with a real directory tree behind S3 (SeaweedFS, MinIO) keep empty "dir/" entries
        # that listings show; delete them deepest first. On AWS S3 these keys do not exist.
        dirs = {path}
        for file in files:
            parent = posixpath.dirname(file)
            while len(parent) > len(path):
                dirs.add(parent)
                parent = posixpath.dirname(parent)
        bucket = path.split("/", 1)[0]
        for directory in sorted(dirs, key=len, reverse=True):
            key = directory.split("/", 1)[1] + "/" if "/" in directory else ""
            if key:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key)

    def replace(self, source: str, target: str) -> None:
        """Rename the file ``source`` to ``target`` in one atomic step, replacing ``target`` if it exists
        (POSIX ``rename``; HDFS ``rename2`` with OVERWRITE). Not for object stores: they have no rename."""
        if self.scheme == "file":
            os.replace(source, target)
        else:
            self.fs.mv(source, target, overwrite=True)

    def to_uri(self, path: str, authority: str) -> str:
        """The URI of the filesystem-native ``path``."""
        if self.scheme == "s3":
            return f"s3://{path}"
        return f"{self.scheme}://{authority}{path}"


BackendFactory = Callable[[str, StorageSettings], Backend]
FILESYSTEMS: Registry[Backend] = Registry("filesystem")


def register_backend(scheme: str, factory: BackendFactory | str) -> None:
    """Make ``scheme://`` URIs reachable through ``factory(authority, storage_settings)``."""
    FILESYSTEMS.register(scheme, factory)


def _local(authority: str, settings: StorageSettings) -> Backend:
    if authority not in ("", "localhost"):
        raise ConfigError(f"file:// URIs name no host, got file://{authority}/...")
    return Backend(
        "file", fsspec.filesystem("file", auto_mkdir=True), object_store=False, spark_scheme="file"
    )


def _hdfs(authority: str, settings: StorageSettings) -> Backend:
    # hdfs-native speaks HDFS' RPC and data-transfer protocols itself (Rust): no JVM, and no native
    # libhdfs, which pyarrow's HadoopFileSystem needs and only Hadoop's binary tarball ships. WebHDFS
    # (fsspec's webhdfs) would need no library either, but it moves every byte over HTTP through a
    # DataNode redirect, and the cluster must enable it.
    from hdfs_native.fsspec import HdfsFileSystem

    if settings.hdfs_user:
        # Both hdfs-native and Spark's Hadoop client take the simple-auth user from here.
        os.environ["HADOOP_USER_NAME"] = settings.hdfs_user
    global _RETRYING_HDFS
    if _RETRYING_HDFS is None:
        _RETRYING_HDFS = _retrying_hdfs(HdfsFileSystem)
    host, _, port = authority.partition(":")
    fs = _RETRYING_HDFS(host=host or None, port=int(port) if port else None)
    return Backend("hdfs", fs, object_store=False, spark_scheme="hdfs")


def _retrying_hdfs(base: Any) -> Any:
    """hdfs-native's filesystem, with whole-file writes retried from scratch.

    hdfs-native's writer survives a DataNode that fails mid-block (it drops it from the pipeline), but
    not one that is down when a new block's pipeline is set up: the Java client then abandons the
    block and asks the NameNode for another, excluding that DataNode; hdfs-native fails the write
    (``Connection refused``, then ``Failed to complete file in time``; its maintainer's advice is to
    retry the whole write, Kimahriman/hdfs-native#154). Until the NameNode declares the DataNode
    dead it keeps choosing it, so a whole-file write (``pipe_file``, ``put_file``: every marker,
    journal and atomic write of :class:`~fjord.fs.shared.SharedFS`) is retried for up to
    :data:`HDFS_WRITE_RETRY_S`. Measured: a publish with a DataNode killed mid-write completes
    (tests/cluster/test_faults.py)."""

    class RetryingHdfsFileSystem(base):
        def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> Any:
            return _retry(lambda: base.pipe_file(self, path, value, **kwargs), self, path)

        def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> Any:
            return _retry(lambda: base.put_file(self, lpath, rpath, **kwargs), self, rpath)

    return RetryingHdfsFileSystem


def _retry(write: Any, fs: Any, path: str) -> Any:
    import time

    deadline = time.monotonic() + HDFS_WRITE_RETRY_S
    pause = 0.5
    while True:
        try:
            return write()
        except (RuntimeError, OSError) as exc:  # hdfs-native's write errors
            if isinstance(exc, FileNotFoundError | PermissionError | FileExistsError):
                raise
            if time.monotonic() + pause > deadline:
                raise
            log.warning("HDFS write of %s failed (%s); writing it again", path, str(exc).splitlines()[0])
            with contextlib.suppress(OSError, RuntimeError):
                fs.rm(path)  # a half-written file (its lease lapses with the failed writer)
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


def _s3(authority: str, settings: StorageSettings) -> Backend:
    client = {"endpoint_url": settings.s3_endpoint_url} if settings.s3_endpoint_url else {}
    fs = fsspec.filesystem(
        "s3", key=settings.s3_key, secret=settings.s3_secret, client_kwargs=client, use_listings_cache=False
    )
    return Backend("s3", fs, object_store=True, spark_scheme="s3a")


register_backend("file", _local)
register_backend("hdfs", _hdfs)
register_backend("s3", _s3)


def backend_for(uri: str, settings: StorageSettings | None = None) -> Backend:
    """The backend serving ``uri``, by its scheme."""
    scheme = urlsplit(uri).scheme
    if scheme not in FILESYSTEMS:
        raise ConfigError(
            f"unsupported filesystem URI {uri!r}: scheme must be one of {', '.join(FILESYSTEMS.names())}"
        )
    storage = settings or get_settings().storage
    return _cached_backend(scheme, urlsplit(uri).netloc, storage.model_dump_json())


@cache
def _cached_backend(scheme: str, authority: str, settings_json: str) -> Backend:
    return FILESYSTEMS.factory(scheme)(authority, StorageSettings.model_validate_json(settings_json))


def local_path(uri: str) -> str | None:
    """The local path of ``uri`` if it is on this host's disk (a ``file://`` URI or a bare path),
    else ``None``: for libraries that read local paths themselves and remote ones through fsspec."""
    if "://" not in uri:
        return uri
    return backend_for(uri).to_path(uri) if urlsplit(uri).scheme == "file" else None


def arrow_scan(backend: Backend, root: str | None = None) -> tuple[Any, bool]:
    """A pyarrow filesystem for ``backend``'s paths (rooted at ``root`` if given), and whether a scan
    over it may use threads.

    A local disk gets Arrow's own C++ filesystem. Other filesystems go through fsspec, which pyarrow
    wraps in Python file objects; a threaded scan over those can abort the process at exit, when an
    Arrow thread frees the last file after the interpreter has stopped ("terminate called without an
    active exception", exit 134: apache/arrow#34314). Such scans run on the calling thread."""
    import pyarrow.fs as pa_fs

    if backend.scheme == "file":
        native = pa_fs.LocalFileSystem()
        return (pa_fs.SubTreeFileSystem(root, native) if root else native), True
    handler = pa_fs.PyFileSystem(pa_fs.FSSpecHandler(backend.fs))
    return (pa_fs.SubTreeFileSystem(root, handler) if root else handler), False


def delta_scan(
    table: Any,
    backend: Backend,
    root: str,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> Any:
    """A Delta table's rows as one pyarrow Table: ``table`` (a ``deltalake.DeltaTable``) at ``root``
    on ``backend``, its files read as :func:`arrow_scan` says (never delta-rs's own threaded scan
    through Python file objects, which aborts the same way on a remote root). ``filters`` are
    DNF tuples, as ``DeltaTable.to_pyarrow_table`` takes them."""
    import pyarrow.parquet as pq

    filesystem, threads = arrow_scan(backend, root)
    dataset = table.to_pyarrow_dataset(filesystem=filesystem)
    condition = pq.filters_to_expression(filters) if filters else None
    return dataset.to_table(columns=columns, filter=condition, use_threads=threads)


def object_store_options(uri: str) -> dict[str, str] | None:
    """Options of Rust's ``object_store`` (delta-rs) for ``uri``'s storage, from the storage
    settings; ``None`` where it needs none (local disk, HDFS)."""
    if urlsplit(uri).scheme != "s3":
        return None
    storage = get_settings().storage
    # A commit is a put-if-absent of the next _delta_log/N.json (If-None-Match: *), which AWS S3,
    # SeaweedFS and MinIO honour: of two writers racing for version N, one gets 412 and retries at
    # N+1. AWS_S3_ALLOW_UNSAFE_RENAME (check, then rename) could let both "win" and lose a commit.
    options = {"conditional_put": "etag", "AWS_REGION": "us-east-1"}
    if storage.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = storage.s3_endpoint_url
        options["AWS_ALLOW_HTTP"] = str(storage.s3_endpoint_url.startswith("http://")).lower()
    if storage.s3_key:
        options["AWS_ACCESS_KEY_ID"] = storage.s3_key
    if storage.s3_secret:
        options["AWS_SECRET_ACCESS_KEY"] = storage.s3_secret
    return options


def spark_uri(uri: str) -> str:
    """The URI Spark's Hadoop filesystems know ``uri`` by (``s3://`` becomes ``s3a://``)."""
    scheme = urlsplit(uri).scheme
    spark_scheme = backend_for(uri).spark_scheme
    return uri if scheme == spark_scheme else spark_scheme + uri[len(scheme) :]


def spark_uris(uris: list[str] | tuple[str, ...]) -> list[str]:
    """:func:`spark_uri` of each, for URIs other libraries give (a Delta snapshot's files)."""
    return [spark_uri(uri) for uri in uris]
