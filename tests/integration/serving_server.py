"""Start ``python -m jobs.serve.server`` as a user would, on free ports, and stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from fjord.services.process import free_port
from tests.conftest import REPO
from tests.waiting import wait_for


class ServerProcess:
    def __init__(self, *flags: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "jobs.serve.server", f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}", "--file_system_poll_wait_seconds=0.3", *flags,
            ],
            cwd=REPO,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def wait_ready(self, model: str, timeout: float = 120) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            return httpx.get(f"{self.url}/v1/models/{model}", timeout=2).status_code == 200

        wait_for(ready, timeout, f"the server to serve {model}", interval=0.3, ignore=(httpx.HTTPError,))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
