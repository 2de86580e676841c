"""The one small interface every embedded server has: start, stop, status, address.

A :class:`Service` keeps its state under ``<home>/services/<name>/``. ``start()`` finds a running
server (started by any process of this Fjord home) before it starts one, and returns its address;
``stop()`` stops it and every process it forked. Subclasses say how to prepare the data directory
(``initdb``, ``kafka-storage format``...), which processes to run, and when they are ready.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fjord.locks import locked
from fjord.private import write_private
from fjord.services import process
from fjord.services.process import read_state, write_state


@dataclass(frozen=True)
class Process:
    """One OS process of a service: a label (``namenode``), its command line and environment."""

    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # SIGINT for PostgreSQL (fast shutdown); SIGTERM for the others.
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class ServiceStatus:
    """What ``fjord services status`` prints for one service."""

    name: str
    running: bool
    address: str | None
    pids: dict[str, int]
    state_dir: Path
    detail: str = ""
    down: tuple[str, ...] = ()  # the processes of a partly running service that are not alive

    @property
    def partly(self) -> str:
        """The state of a service some of whose processes run: ``partly running (a, b are down)``;
        empty when it runs whole or not at all."""
        if self.running or not self.pids:
            return ""
        what = f" ({', '.join(self.down)} {'is' if len(self.down) == 1 else 'are'} down)" if self.down else ""
        return f"partly running{what}"


class Service(ABC):
    """An embedded server of the local stack.

    ``preferred_ports=True`` takes the well-known ports (5432, 6379, 9092...) when they are free;
    tests pass ``False`` so they never take a port a developer's own stack might want.
    """

    name: ClassVar[str]
    # The ports this service needs, by role, with the well-known port of each.
    ports: ClassVar[dict[str, int]]
    start_timeout_s: ClassVar[float] = 60.0
    # The secrets the service is started with, generated per home (see :meth:`credentials`).
    secret_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, home: Path, *, preferred_ports: bool = True) -> None:
        self.dir = Path(home) / "services" / self.name
        self.data = self.dir / "data"
        self._preferred = preferred_ports
        self._state_file = self.dir / "state.json"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dir)!r})"

    # -- what a subclass says ------------------------------------------------------------------

    @abstractmethod
    def address_for(self, ports: dict[str, int]) -> str:
        """The address clients use (a URL or ``host:port``), given the service's ports."""

    @abstractmethod
    def processes(self, ports: dict[str, int]) -> list[Process]:
        """The processes to start, in order (each is ready before the next starts)."""

    @abstractmethod
    def ready(self, label: str, ports: dict[str, int]) -> bool:
        """True once process ``label`` serves requests."""

    def credentials(self) -> dict[str, str]:
        """This home's generated secrets of the service (``secret_names``), made once on first use and
        kept mode 600 in ``credentials.json``: no two homes share a password, and none is in the source."""
        path = self.dir / "credentials.json"
        with locked(self.dir / "credentials.lock"):
            known = json.loads(path.read_text()) if path.exists() else {}
            missing = [name for name in self.secret_names if name not in known]
            if missing:
                known |= {name: secrets.token_urlsafe(24) for name in missing}
                write_private(path, json.dumps(known))
        return known

    def role_ports(self) -> dict[str, int]:
        """The ports this instance needs, by role, with each one's well-known port: :attr:`ports`, to
        which a service of several nodes adds each node's."""
        return dict(self.ports)

    def prepare(self, ports: dict[str, int]) -> None:  # noqa: B027 (most services need nothing)
        """Set up the data directory before the first start (and the config before every start)."""

    def started(self, ports: dict[str, int]) -> None:  # noqa: B027 (most services need nothing)
        """What to do once every process is ready, at each start (not when found running)."""

    # -- the interface -------------------------------------------------------------------------

    def start(self) -> str:
        """Start the service unless it is running; its address."""
        with locked(self.dir / "start.lock"):
            state = read_state(self._state_file)
            if self._running(state):
                return self.address_for(state["ports"])
            self._stop_pids(state)  # half a service (a dead DataNode beside a live NameNode)
            ports = self._choose_ports(state.get("ports", {}))
            self.data.mkdir(parents=True, exist_ok=True)
            self.prepare(ports)
            pids: dict[str, int] = {}
            signals: dict[str, int] = {}
            started = time.monotonic()
            try:
                for proc in self.processes(ports):
                    log = self.log(proc.label)
                    pid = process.spawn(proc.argv, log, env=proc.env, cwd=self.dir)
                    pids[proc.label], signals[proc.label] = pid, proc.stop_signal
                    self._record(ports, pids, signals=signals)
                    process.wait_until(
                        functools.partial(self.ready, proc.label, ports),
                        what=f"{self.name} ({proc.label})",
                        pid=pid,
                        log=log,
                        timeout=self.start_timeout_s,
                    )
                self.started(ports)
            except BaseException:
                self._stop_pids({"pids": pids, "signals": signals})
                self._record(ports, {})
                raise
            self._record(ports, pids, signals=signals, started_in_s=round(time.monotonic() - started, 2))
            return self.address_for(ports)

    def stop(self) -> bool:
        """Stop every process of the service; ``False`` if none was running."""
        with locked(self.dir / "start.lock"):
            state = read_state(self._state_file)
            stopped = self._stop_pids(state)
            if state:
                self._record(state.get("ports", {}), {})
            return stopped

    def status(self) -> ServiceStatus:
        """Whether it runs, where, and as which processes."""
        state = read_state(self._state_file)
        running = self._running(state)
        pids = {k: v for k, v in state.get("pids", {}).items() if process.alive(v)}
        address = self.address_for(state["ports"]) if running else None
        down = tuple(label for label in state.get("pids", {}) if label not in pids)
        status = ServiceStatus(self.name, running, address, pids, self.dir, down=down)
        if status.partly:
            return dataclasses.replace(status, detail=f"{status.partly}: start it again to restart it")
        return status

    def address(self) -> str | None:
        """The address of the running service, or ``None``."""
        return self.status().address

    def recorded_address(self) -> str | None:
        """The address the service had when last started (it keeps its ports across restarts),
        running or not; ``None`` if it never started."""
        ports = self.recorded_ports()
        return self.address_for(ports) if ports else None

    def recorded_ports(self) -> dict[str, int]:
        """Each role's port when last started (``{}`` if it never started)."""
        return dict(read_state(self._state_file).get("ports") or {})

    def pids(self) -> dict[str, int]:
        """The pid of each running process, by label (tests kill them)."""
        return self.status().pids

    def log(self, label: str) -> Path:
        """The log file of process ``label``."""
        return self.dir / f"{label}.log"

    # -- internals -----------------------------------------------------------------------------

    def _running(self, state: dict[str, Any]) -> bool:
        pids = state.get("pids") or {}
        if not pids or not all(process.alive(pid) for pid in pids.values()):
            return False
        return all(self.ready(label, state["ports"]) for label in pids)

    def _choose_ports(self, previous: dict[str, int]) -> dict[str, int]:
        chosen: dict[str, int] = {}
        for role, default in self.role_ports().items():
            # The same ports as last time when free: clients and a DataNode's registration keep working.
            wanted = previous.get(role) or (default if self._preferred else None)
            port = process.free_port(wanted)
            while port in chosen.values():
                port = process.free_port()
            chosen[role] = port
        return chosen

    def _stop_pids(self, state: dict[str, Any]) -> bool:
        signals = state.get("signals") or {}
        stopped = False
        # Last started, first stopped (the DataNode before the NameNode).
        for label, pid in reversed(list((state.get("pids") or {}).items())):
            stopped = process.stop_group(pid, signals.get(label, signal.SIGTERM)) or stopped
        return stopped

    def _record(self, ports: dict[str, int], pids: dict[str, int], **extra: Any) -> None:
        state = {"ports": ports, "pids": pids, **extra}
        write_state(self._state_file, state)
