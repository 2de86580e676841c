"""The shared filesystem's backends, each a real server or disk: file://, hdfs:// (the embedded HDFS) and
s3:// (SeaweedFS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from fjord.config import reset_settings
from fjord.services.s3 import ACCESS_KEY, BUCKET


@pytest.fixture(params=["file", "hdfs", "s3"])
def storage_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The root URI of a fresh shared filesystem on each backend, configured as storage.root."""
    if request.param == "file":
        root = (tmp_path / "shared").as_uri()
    elif request.param == "hdfs":
        root = f"{request.getfixturevalue('hdfs_server')}/{uuid.uuid4().hex}"
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
        monkeypatch.setenv("FJORD_STORAGE__S3_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("FJORD_STORAGE__S3_KEY", ACCESS_KEY)
        monkeypatch.setenv("FJORD_STORAGE__S3_SECRET", request.getfixturevalue("s3_secret"))
    monkeypatch.setenv("FJORD_STORAGE__ROOT", root)
    reset_settings()
    return root
