"""MLflow's artifacts on Fjord's shared filesystem, for ``hdfs://`` and ``s3://`` artifact URIs.

MLflow's own HDFS repository needs pyarrow's ``HadoopFileSystem``, that is the native ``libhdfs`` that
only Hadoop's binary tarball ships; its S3 repository needs boto3 and its own ``MLFLOW_S3_*``
variables. This repository reaches both through :class:`fjord.fs.SharedFS` (hdfs-native and s3fs,
with the endpoint and keys of ``storage.*``), so the MLflow server, the driver and every trial store
artifacts with the settings the rest of Fjord uses. It is registered under MLflow's
``mlflow.artifact_repository`` entry point (``pyproject.toml``), which takes precedence over MLflow's
built-in repositories for these schemes.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from fjord.fs import SharedFS


class SharedFSArtifactRepository(ArtifactRepository):
    """An MLflow artifact repository rooted at an ``hdfs://`` or ``s3://`` URI."""

    def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(artifact_uri, *args, **kwargs)
        self._root = SharedFS(artifact_uri.rstrip("/"))

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        name = os.path.basename(local_file)
        self._root.upload(local_file, posixpath.join(artifact_path, name) if artifact_path else name)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        for directory, _, files in os.walk(local_dir):
            sub = os.path.relpath(directory, local_dir)
            for name in files:
                rel = posixpath.normpath(posixpath.join(artifact_path or "", sub.replace(os.sep, "/"), name))
                self._root.upload(os.path.join(directory, name), rel)

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        rel = path or ""
        fs = self._root.backend.fs
        if not self._root.exists(rel) or not fs.isdir(self._root.path(rel)):
            return []
        infos = []
        # One listing with details, not a metadata request per entry (an S3 HEAD each).
        for entry in sorted(fs.ls(self._root.path(rel), detail=True), key=lambda e: e["name"]):
            name = posixpath.basename(entry["name"].rstrip("/"))
            child = posixpath.join(rel, name) if rel else name
            is_dir = entry["type"] == "directory"
            infos.append(FileInfo(child, is_dir, None if is_dir else int(entry["size"])))
        return infos

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        self._root.backend.fs.get_file(self._root.path(remote_file_path), local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        targets = [artifact_path] if artifact_path else self._root.listdir("", include_hidden=True)
        for rel in targets:
            self._root.rm(rel, recursive=True)
