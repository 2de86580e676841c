"""The shared filesystem, seen from one root: path-safe access and atomic publish.

Every path given to a :class:`SharedFS` is relative to its root. ``..``, absolute paths, other URIs
and (on local disks) symlinks that lead out of the root are refused with :class:`PathEscapeError`.

A directory is *published* when it holds a ``_SUCCESS`` marker. :meth:`SharedFS.publish` writes the
directory under a hidden temporary name (``_tmp.*``: Spark and Hadoop skip names starting with ``_``),
renames it into place, then writes the marker, so a reader that waits for ``_SUCCESS`` never sees half
a dataset::

    root = SharedFS("file:///data/fjord")
    with root.publish("Resources/landing/2026-11-23") as out:
        out.write_text("transactions.csv", csv_text)      # or df.write.parquet(out.spark_uri())
    root.is_published("Resources/landing/2026-11-23")     # True
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from fjord.errors import AlreadyExistsError, NotFoundError, PathEscapeError, storage_full
from fjord.faults import crash_point
from fjord.fs.backends import Backend, arrow_scan, backend_for, spark_uri

SUCCESS = "_SUCCESS"
_STAGING_PREFIX = "_tmp."
_RETIRED_PREFIX = "_old."
_SWAP_PREFIX = "_swap."  # the journal of a directory being replaced
_DIR_MARKER = ".keep"
# A staging directory this old belongs to a writer that died: no publish writes for six hours.
STALE_STAGING_S = 6 * 3600


class SharedFS:
    """A directory tree on the shared filesystem; every path is resolved inside its root."""

    def __init__(self, root_uri: str, *, backend: Backend | None = None) -> None:
        self.backend = backend or backend_for(root_uri)
        self._authority = urlsplit(root_uri).netloc
        self._root = self.backend.to_path(root_uri).rstrip("/") or "/"
        self._real_root = os.path.realpath(self._root) if self.backend.local else self._root

    def __repr__(self) -> str:
        return f"SharedFS({self.uri()!r})"

    # -- paths ---------------------------------------------------------------------------------

    def path(self, rel: str = "") -> str:
        """The filesystem-native path of ``rel``; refuses anything that leaves the root."""
        if "\x00" in rel or "://" in rel or rel.startswith(("/", "\\")):
            raise PathEscapeError(f"path {rel!r} must be relative to {self.uri()}")
        norm = posixpath.normpath(rel) if rel else "."
        if norm == ".." or norm.startswith("../"):
            raise PathEscapeError(f"path {rel!r} leaves {self.uri()}")
        full = self._root if norm == "." else posixpath.join(self._root, norm)
        if self.backend.local:
            real = os.path.realpath(full)
            if real != self._real_root and not real.startswith(self._real_root.rstrip("/") + "/"):
                raise PathEscapeError(f"path {rel!r} leads out of {self.uri()} through a symlink")
        return full

    def uri(self, rel: str = "") -> str:
        """The full URI of ``rel``, for libraries that take URIs (deltalake, pyarrow, duckdb)."""
        return self.backend.to_uri(self.path(rel), self._authority)

    def spark_uri(self, rel: str = "") -> str:
        """The URI Spark reads ``rel`` by (``s3://`` becomes ``s3a://``)."""
        return spark_uri(self.uri(rel))

    def sub(self, rel: str) -> SharedFS:
        """A :class:`SharedFS` rooted at ``rel``, itself confined to it."""
        return SharedFS(self.uri(rel), backend=self.backend)

    # -- reading and writing -------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        return bool(self.backend.fs.exists(self.path(rel)))

    def is_published(self, rel: str) -> bool:
        """True once ``rel`` holds its ``_SUCCESS`` marker (what an Airflow sensor polls). A
        replacement of ``rel`` that its writer left half done is settled first (see ``publish``)."""
        if rel and posixpath.normpath(rel) not in ("", "."):
            self._finish_swap(self.path(rel))
        return self.exists(posixpath.join(rel, SUCCESS))

    def publication(self, rel: str) -> dict[str, Any]:
        """The marker's record of a published directory: when, how many files, how many bytes."""
        if not self.is_published(rel):
            raise NotFoundError(f"{self.uri(rel)} is not published (no {SUCCESS})")
        return json.loads(self.read_text(posixpath.join(rel, SUCCESS)) or "{}")

    def listdir(self, rel: str = "", *, include_hidden: bool = False) -> list[str]:
        """Names in directory ``rel``, sorted; staging and marker files (``_*``, ``.*``) left out."""
        path = self.path(rel)
        if not self.backend.fs.isdir(path):
            raise NotFoundError(f"{self.uri(rel)} is not a directory")
        names = sorted(posixpath.basename(p.rstrip("/")) for p in self.backend.fs.ls(path, detail=False))
        return names if include_hidden else [n for n in names if not n.startswith(("_", "."))]

    def find(self, rel: str = "", *, suffix: str = "") -> list[str]:
        """Paths, relative to the root, of the files under ``rel`` (recursively) whose names end in
        ``suffix``, sorted; staging and marker files (``_*``, ``.*``) left out."""
        root = self.path()
        found = (posixpath.relpath(p, root) for p in self.backend.fs.find(self.path(rel)))
        return sorted(
            p for p in found if p.endswith(suffix) and not posixpath.basename(p).startswith(("_", "."))
        )

    def makedirs(self, rel: str) -> None:
        path = self.path(rel)
        self.backend.fs.makedirs(path, exist_ok=True)
        if self.backend.object_store:  # a prefix exists only while it holds an object
            self.backend.fs.pipe_file(posixpath.join(path, _DIR_MARKER), b"")

    def open(self, rel: str, mode: str = "rb") -> IO[Any]:
        path = self.path(rel)
        if "w" in mode or "a" in mode:
            self.backend.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        return self.backend.fs.open(path, mode)

    def read_bytes(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise NotFoundError(f"{self.uri(rel)} does not exist")
        return bytes(self.backend.fs.cat_file(self.path(rel)))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def checksum(self, rel: str) -> str:
        """``sha256:`` and the first 32 hex digits of the SHA-256 of the file ``rel``, read in 4 MiB
        pieces: how the lineage names a raw file's version."""
        digest = hashlib.sha256()
        with self.open(rel) as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()[:32]}"

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> Any:
        """The Parquet file ``rel``, or every ``.parquet`` file under the directory ``rel``, as one
        pyarrow Table; read as :func:`~fjord.fs.backends.arrow_scan` says (never through a Python
        file object on a thread of Arrow's)."""
        import pyarrow.dataset as ds

        files = [rel] if rel.endswith(".parquet") else self.find(rel, suffix=".parquet")
        filesystem, threads = arrow_scan(self.backend)
        dataset = ds.dataset([self.path(f) for f in files], filesystem=filesystem, format="parquet")
        return dataset.to_table(columns=columns, use_threads=threads)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file atomically: readers see the old content or the new, never a part."""
        self._put_atomically(rel, lambda path: self.backend.fs.pipe_file(path, data))

    def download(self, rel: str, local_dir: str | os.PathLike[str]) -> None:
        """Copy the tree at ``rel`` (every file, hidden ones too) into the local directory ``local_dir``."""
        base = self.path(rel)
        for directory, _, files in self.backend.fs.walk(base):
            sub = posixpath.relpath(directory, base)
            for name in files:
                target = os.path.join(local_dir, sub, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self.backend.fs.get_file(posixpath.join(directory, name), target)

    @contextmanager
    def local_copy(self, rel: str) -> Iterator[Path | None]:
        """The tree at ``rel`` as a local directory, for libraries that read only local files (MLflow's
        ``log_artifacts``): the directory itself on a local disk, else a temporary copy removed after.
        ``None`` if ``rel`` does not exist."""
        if not self.exists(rel):
            yield None
        elif self.backend.local:
            yield Path(self.path(rel))
        else:
            with tempfile.TemporaryDirectory(prefix="fjord-copy-") as local:
                self.download(rel, local)
                yield Path(local)

    def upload(self, local_path: str, rel: str) -> None:
        """Copy a local file to ``rel`` atomically (streamed, not read into memory)."""
        self._put_atomically(rel, lambda path: self.backend.fs.put_file(local_path, path))

    def _put_atomically(self, rel: str, put: Callable[[str], object]) -> None:
        path = self.path(rel)
        parent, name = posixpath.split(path)
        self.backend.fs.makedirs(parent, exist_ok=True)
        if self.backend.object_store:
            put(path)  # an object PUT is atomic already
            return
        tmp = posixpath.join(parent, f"{_STAGING_PREFIX}{name}.{uuid.uuid4().hex}")
        try:
            put(tmp)
            self.backend.replace(tmp, path)
        except BaseException:
            if self.backend.fs.exists(tmp):
                self.backend.fs.rm(tmp)
            raise

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def rm(self, rel: str, *, recursive: bool = False) -> None:
        if not rel or posixpath.normpath(rel) == ".":
            raise PathEscapeError(f"refusing to remove the root {self.uri()}")
        path = self.path(rel)
        if recursive:
            self.backend.remove_tree(path)
        elif self.backend.fs.exists(path):
            self.backend.fs.rm(path)

    # -- atomic publish ------------------------------------------------------------------------

    @contextmanager
    def publish(self, rel: str, *, overwrite: bool = False) -> Iterator[SharedFS]:
        """Write a directory under a temporary name, then move it to ``rel`` and mark it published.

        Yields a :class:`SharedFS` rooted at the staging directory. If the block raises (or the
        process dies), nothing appears at ``rel``. A published ``rel`` is replaced only with
        ``overwrite=True``; an unpublished leftover at ``rel`` (a crash between the rename and the
        marker) is always replaced.
        """
        target = self.path(rel)
        if posixpath.normpath(rel) in ("", "."):
            raise PathEscapeError(f"cannot publish the root {self.uri()} itself")
        self._finish_swap(target)  # a replacement its writer left half done
        self._remove_stale_leftovers(target)
        if self.is_published(rel) and not overwrite:
            raise AlreadyExistsError(
                f"{self.uri(rel)} is already published", hint="pass overwrite=True to replace it"
            )
        parent, name = posixpath.split(target)
        staging = posixpath.join(parent, f"{_STAGING_PREFIX}{name}.{uuid.uuid4().hex}")
        fs = self.backend.fs
        try:
            # Not created up front: writers such as Spark refuse to write into an existing directory.
            yield SharedFS(self.backend.to_uri(staging, self._authority), backend=self.backend)
            fs.makedirs(staging, exist_ok=True)
            files = [info for info in fs.find(staging, detail=True).values() if info["type"] == "file"]
            if not overwrite and self.is_published(rel):  # another writer published it meanwhile
                raise AlreadyExistsError(f"{self.uri(rel)} is already published")
            marker = {
                "published_at": datetime.now(UTC).isoformat(),
                "files": len(files),
                "bytes": sum(int(info.get("size") or 0) for info in files),
            }
            self._move_into_place(staging, target, json.dumps(marker).encode())
        except BaseException as exc:
            self.backend.remove_tree(staging)
            full = storage_full(exc, self.uri())
            if full is not None:
                raise full from exc
            raise

    def _move_into_place(self, staging: str, target: str, success: bytes) -> None:
        """Move ``staging`` to ``target`` and mark it published. Replacing a directory takes two moves
        (the old one aside, the new one in); a journal written first lets :meth:`_finish_swap` put the
        old one back if the writer dies before the new one is marked, so a reader finds one of them
        whole, never neither."""
        fs = self.backend.fs
        if not fs.exists(target):
            self._move_tree(staging, target)
            crash_point("publish_dir.new_moved")  # in place, not yet marked: readers do not list it
            fs.pipe_file(posixpath.join(target, SUCCESS), success)
            return
        parent, name = posixpath.split(target)
        retired = posixpath.join(parent, f"{_RETIRED_PREFIX}{name}.{uuid.uuid4().hex}")
        journal = posixpath.join(parent, f"{_SWAP_PREFIX}{name}.json")
        fs.pipe_file(journal, json.dumps({"staging": staging, "retired": retired}).encode())
        crash_point("publish_dir.journaled")
        self._move_tree(target, retired)
        crash_point("publish_dir.retired")
        self._move_tree(staging, target)
        crash_point("publish_dir.moved")
        fs.pipe_file(posixpath.join(target, SUCCESS), success)  # the new directory's commit point
        crash_point("publish_dir.marked")
        self.backend.remove_tree(retired)
        fs.rm(journal)

    def _finish_swap(self, target: str) -> None:
        """Settle a replacement of ``target`` whose writer died (its journal is still there): before
        the new directory was marked, the old one goes back in place; after, the old one goes."""
        fs = self.backend.fs
        parent, name = posixpath.split(target)
        journal = posixpath.join(parent, f"{_SWAP_PREFIX}{name}.json")
        if not fs.exists(journal):
            return
        moves = json.loads(fs.cat_file(journal))
        if not fs.exists(posixpath.join(target, SUCCESS)) and fs.exists(moves["retired"]):
            if fs.exists(target):
                self.backend.remove_tree(target)  # the new one, moved in but never marked
            self._move_tree(moves["retired"], target)
        for leftover in (moves["staging"], moves["retired"]):
            if fs.exists(leftover):
                self.backend.remove_tree(leftover)
        fs.rm(journal)

    def _remove_stale_leftovers(self, target: str) -> None:
        """Remove what dead writers of ``target`` left beside it: staging and retired directories older
        than :data:`STALE_STAGING_S` (a live writer's are younger). Each publish cleans its own name."""
        fs = self.backend.fs
        parent, name = posixpath.split(target)
        if not fs.exists(parent):
            return
        prefixes = (f"{_STAGING_PREFIX}{name}.", f"{_RETIRED_PREFIX}{name}.")
        now = datetime.now(UTC).timestamp()
        for info in fs.ls(parent, detail=True):
            base = posixpath.basename(info["name"].rstrip("/"))
            modified = _modified(info)
            if base.startswith(prefixes) and modified is not None and now - modified > STALE_STAGING_S:
                self.backend.remove_tree(info["name"].rstrip("/"))

    def _move_tree(self, source: str, target: str) -> None:
        fs = self.backend.fs
        if not self.backend.object_store:
            fs.mv(source, target, recursive=True)  # one rename: atomic on local disks and HDFS
            return
        files = fs.find(source)
        for file in files:
            fs.copy(file, posixpath.join(target, posixpath.relpath(file, source)))
        self.backend.remove_tree(source)

    def clean_staging(self, rel: str = "") -> list[str]:
        """Remove leftovers of publishes whose writer died (``_tmp.*``, ``_old.*``) under ``rel``.
        Replacements left half done are settled first (their old directory may be the only copy)."""
        for name in self.listdir(rel, include_hidden=True):
            if name.startswith(_SWAP_PREFIX) and name.endswith(".json"):
                self._finish_swap(self.path(posixpath.join(rel, name[len(_SWAP_PREFIX) : -len(".json")])))
        removed = []
        for name in self.listdir(rel, include_hidden=True):
            if name.startswith((_STAGING_PREFIX, _RETIRED_PREFIX)):
                self.rm(posixpath.join(rel, name), recursive=True)
                removed.append(name)
        return removed


def _modified(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time in epoch seconds, if its filesystem gives one."""
    for key in ("mtime", "modification_time", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value) / (1000 if value > 1e11 else 1)  # HDFS gives milliseconds
    return None
