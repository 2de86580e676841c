"""One writer per feature group: a lease in the metadata database.

A writer takes a group's lease before it touches the group's table and holds it until its publish has
committed or failed. The lease names its holder (host, pid, publish id) and expires
``featurestore.writer_lease_seconds`` after its last renewal; a thread renews it at a third of that
while the writer lives, so a holder that died (killed, its host gone) loses it by expiry, and one that
died on this host loses it at once (its pid is gone). A second writer waits up to
``featurestore.writer_wait_seconds`` for the lease, then fails with :class:`WriterBusyError` naming
the holder.

Taking, renewing and releasing are compare-and-set updates (``... WHERE holder = :expected``), so
they are safe on SQLite and PostgreSQL alike, and the publish's commit point checks, inside its own
transaction, that it still holds every lease it needs (:func:`check_held`): a writer that was paused
past its lease cannot commit over its successor.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from featurestore.errors import FeatureStoreError
from fjord.config import get_settings
from fjord.metadata import ensure_tables
from fjord.services.process import alive

log = logging.getLogger(__name__)

_schema = MetaData()
_leases = Table(
    "fs_writer_leases",
    _schema,
    Column("group_id", Integer, primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
_POLL_SECONDS = 0.2


class WriterBusyError(FeatureStoreError):
    """Another writer holds the feature group's lease (and kept it past the wait)."""

    exit_code = 12


class LeaseLostError(FeatureStoreError):
    """This writer's lease expired or was taken over before its publish committed."""

    exit_code = 12


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as another writer's error shows it."""

    holder: str
    host: str
    pid: int
    acquired_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC)"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


_VANISHED = object()  # a lease row that was there a moment ago and is gone: its holder released it


class WriterLeases:
    """The leases one writer (one publish) holds, renewed in the background until released."""

    def __init__(self, engine: Engine, *, ttl: float | None = None, wait: float | None = None) -> None:
        settings = get_settings().featurestore
        self.engine = engine
        self.ttl = ttl if ttl is not None else settings.writer_lease_seconds
        self.wait = wait if wait is not None else settings.writer_wait_seconds
        self.holder = uuid.uuid4().hex
        self.held: dict[int, str] = {}  # group id -> the group's name, for messages
        self.lost: set[int] = set()
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        ensure_tables(_schema, engine)

    def acquire(self, group_id: int, name: str) -> None:
        """Take ``group_id``'s lease, waiting for another holder up to the configured wait."""
        if group_id in self.held:
            return
        deadline = time.monotonic() + self.wait
        waiting = False
        while True:
            current = self._try_take(group_id)
            if current is None:
                break
            if not waiting and self.wait > 0:
                waiting = True  # said once: a writer that waits in silence looks hung
                log.info("feature group %s is being written by %s: waiting up to %g s for its lease",
                         name, current.describe(), self.wait)  # fmt: skip
            if time.monotonic() >= deadline:
                raise WriterBusyError(
                    f"feature group {name} is being written by {current.describe()}; waited {self.wait:g} s",
                    hint="one writer per feature group at a time: wait for it to finish, or raise "
                    "featurestore.writer_wait_seconds",
                )
            time.sleep(_POLL_SECONDS)
        self.held[group_id] = name
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="fjord-lease-renewal", daemon=True)
            self._renewer.start()

    def _try_take(self, group_id: int) -> Holder | None:
        """Take the lease if it is free, expired or held by a dead process of this host; else its holder."""
        while True:
            outcome = self._try_take_once(group_id)
            if outcome is not _VANISHED:  # the holder we lost a race to released in between: try again
                return outcome

    def _try_take_once(self, group_id: int) -> Holder | object | None:
        now = datetime.now(UTC)
        mine = {
            "holder": self.holder,
            "host": self._host,
            "pid": self._pid,
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=self.ttl),
        }
        with self.engine.begin() as conn:
            row = conn.execute(select(_leases).where(_leases.c.group_id == group_id)).first()
            if row is None:
                try:
                    conn.execute(insert(_leases).values(group_id=group_id, **mine))
                except IntegrityError:  # PostgreSQL: another writer inserted first
                    return self._holder_of(group_id) or _VANISHED
                return None
            current = Holder(row.holder, row.host, row.pid, _utc(row.acquired_at), _utc(row.expires_at))
            dead = current.host == self._host and not alive(current.pid)
            if current.expires_at > now and not dead:
                return current
            taken = conn.execute(
                update(_leases)
                .where(_leases.c.group_id == group_id, _leases.c.holder == current.holder)
                .values(**mine)
            ).rowcount
        return None if taken == 1 else self._holder_of(group_id) or _VANISHED

    def _holder_of(self, group_id: int) -> Holder | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_leases).where(_leases.c.group_id == group_id)).first()
        if row is None:
            return None
        return Holder(row.holder, row.host, row.pid, _utc(row.acquired_at), _utc(row.expires_at))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except SQLAlchemyError as exc:  # the database is away: try again at the next tick; the
                # commit point reads the leases itself, so an unrenewed lease cannot commit late
                log.warning("could not renew writer leases: %s", str(exc).splitlines()[0])

    def renew(self) -> None:
        """Push the expiry of every held lease; a lease found taken over is marked lost."""
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl)
        for group_id in list(self.held):
            with self.engine.begin() as conn:
                renewed = conn.execute(
                    update(_leases)
                    .where(_leases.c.group_id == group_id, _leases.c.holder == self.holder)
                    .values(expires_at=expires)
                ).rowcount
            if renewed != 1:
                self.lost.add(group_id)

    def check_held(self, conn: Connection, group_ids: list[int]) -> None:
        """Raise :class:`LeaseLostError` unless this writer still holds every lease in ``group_ids``,
        read within ``conn``'s transaction (the publish's commit point)."""
        now = datetime.now(UTC)
        rows = conn.execute(select(_leases).where(_leases.c.group_id.in_(group_ids))).all()
        held = {r.group_id for r in rows if r.holder == self.holder and _utc(r.expires_at) > now}
        missing = [self.held.get(g, str(g)) for g in group_ids if g not in held or g in self.lost]
        if missing:
            raise LeaseLostError(
                f"the writer lease of {', '.join(missing)} expired or was taken over before the commit; "
                "nothing was published",
                hint="a writer paused longer than featurestore.writer_lease_seconds loses its lease; rerun",
            )

    def release(self) -> None:
        """Give back every lease still held, and stop renewing."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.held:
            with self.engine.begin() as conn:
                conn.execute(
                    _leases.delete().where(
                        _leases.c.group_id.in_(list(self.held)), _leases.c.holder == self.holder
                    )
                )
        self.held.clear()


def live_leases(engine: Engine) -> list[str]:
    """The writers holding a lease now (``describe`` of each): a publish is in flight."""
    ensure_tables(_schema, engine)
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(_leases.select()).all()
    live = []
    for row in rows:
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        if expires > now:
            live.append(f"pid {row.pid} on {row.host} (group {row.group_id})")
    return live
