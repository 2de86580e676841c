"""DuckDB join engine: ASOF LEFT JOIN over the snapshots' Parquet files, streamed out in batches."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

import duckdb
import fsspec
import pyarrow as pa

from featurestore.engines.base import JoinEngine, JoinPlan, Source
from featurestore.formats import write_parquet
from featurestore.schema import normalise
from fjord.config import get_settings
from fjord.fs import SharedFS, backend_for, local_path

_BATCH_ROWS = 256_000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_parquet_sql(
    con: duckdb.DuckDBPyConnection, uris: list[str] | tuple[str, ...], **options: str
) -> str:
    """SQL that reads the Parquet files ``uris`` in ``con``, with ``union_by_name`` and ``options``.

    Local files are read by DuckDB itself; ``s3://`` and ``hdfs://`` files through Fjord's fsspec
    filesystem, registered with ``con`` on first use.
    """
    paths = []
    for uri in uris:
        local = local_path(uri)
        if local is None:
            fs = backend_for(uri).fs
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            if protocol not in con.list_filesystems():  # DuckDB names it by the first protocol
                con.register_filesystem(_shared_reads(fs))
        paths.append(local or uri)
    listed = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    extra = "".join(f", {key} = {value}" for key, value in options.items())
    return f"read_parquet({listed}, union_by_name = true{extra})"


class _SharedFile(io.RawIOBase):
    """One open file that DuckDB's threads read at once: each thread has its own position, and a
    lock makes each seek-and-read one step.

    DuckDB's Python filesystem hands the same file object to several threads, and seeks, then reads,
    in two calls. hdfs-native's reader is not thread-safe ("RuntimeError: Already borrowed" when two
    threads meet in it), and any fsspec file would read at another thread's position."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner
        self._lock = threading.Lock()
        self._positions: dict[int, int] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        me = threading.get_ident()
        if whence == os.SEEK_CUR:
            offset += self._positions.get(me, 0)
        elif whence == os.SEEK_END:
            offset += self._inner.size
        self._positions[me] = offset
        return offset

    def tell(self) -> int:
        return self._positions.get(threading.get_ident(), 0)

    def read(self, size: int = -1) -> bytes:
        me = threading.get_ident()
        with self._lock:
            self._inner.seek(self._positions.get(me, 0))
            data = self._inner.read(size)
        self._positions[me] = self._positions.get(me, 0) + len(data)
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()

    def __getattr__(self, name: str) -> Any:  # size, path, info...: the inner file's
        return getattr(self._inner, name)


@cache
def _shared_reads_class(cls: type) -> type:
    """``cls`` with files that DuckDB's threads can share (see ``_SharedFile``)."""

    def open(self: Any, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        opened = cls.open(self, path, mode, **kwargs)
        return _SharedFile(opened) if mode == "rb" else opened

    return type(f"SharedReads{cls.__name__}", (cls,), {"open": open})


def _shared_reads(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """The filesystem ``fs``, as DuckDB may use it from several threads."""
    return _shared_reads_class(type(fs))(*fs.storage_args, **fs.storage_options)


def connect_duckdb() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with bounded memory: past ``featurestore.duckdb_memory_limit`` it spills
    to ``$FJORD_HOME/duckdb-tmp`` (DuckDB's own default is 80 % of the machine's memory)."""
    settings = get_settings()
    spill = settings.home / "duckdb-tmp"
    spill.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(
        config={
            "threads": 2,
            "memory_limit": settings.featurestore.duckdb_memory_limit,
            "temp_directory": str(spill),
        }
    )


class DuckDBJoinEngine(JoinEngine):
    name = "duckdb"

    def _read(
        self, con: duckdb.DuckDBPyConnection, source: Source, columns: list[str]
    ) -> tuple[str, pa.Table | None]:
        if not source.files:  # a table with no data files: an empty relation of the right shape
            assert source.schema is not None
            empty = pa.Table.from_batches([], schema=source.schema)
            return f"(SELECT {', '.join(_q(c) for c in columns)} FROM empty_{id(empty)})", empty
        cols = ", ".join(_q(c) for c in columns)
        return f"(SELECT {cols} FROM {read_parquet_sql(con, source.files)})", None

    def sql(self, con: duckdb.DuckDBPyConnection, plan: JoinPlan) -> tuple[str, dict[str, pa.Table]]:
        """The query for ``plan`` in ``con`` and the empty tables it refers to."""
        empties: dict[str, pa.Table] = {}
        left = plan.left
        left_keys = [k for k, _ in left.keys]
        join_keys = [lk for source in plan.joins for lk, _ in source.keys]  # read even if not selected
        left_cols = list(dict.fromkeys([*left_keys, left.event_time, *left.columns, *join_keys]))
        relation, empty = self._read(con, left, left_cols)
        if empty is not None:
            empties[f"empty_{id(empty)}"] = empty
        where = []
        if plan.start_time is not None:
            where.append(f"{_q(left.event_time)} >= TIMESTAMPTZ '{plan.start_time.isoformat()}'")
        if plan.end_time is not None:
            where.append(f"{_q(left.event_time)} < TIMESTAMPTZ '{plan.end_time.isoformat()}'")
        ctes = [f"l AS (SELECT * FROM {relation} {'WHERE ' + ' AND '.join(where) if where else ''})"]
        select = [f"l.{_q(c)}" for c in dict.fromkeys([*left_keys, left.event_time])]
        select += [
            f"l.{_q(c)} AS {_q(o)}"
            for c, o in zip(left.columns, left.outputs(), strict=True)
            if o not in (*left_keys, left.event_time)
        ]
        joins = []
        for i, source in enumerate(plan.joins):
            alias, ts = f"r{i}", f"__ts{i}"
            right_keys = [r for _, r in source.keys]
            cols = list(dict.fromkeys([*right_keys, *source.columns]))
            body, empty = self._read(con, source, [*cols, source.event_time])
            if empty is not None:
                empties[f"empty_{id(empty)}"] = empty
            renamed = ", ".join([_q(c) for c in cols] + [f"{_q(source.event_time)} AS {ts}"])
            ctes.append(f"{alias} AS (SELECT {renamed} FROM {body})")
            on = " AND ".join(f"l.{_q(lk)} = {alias}.{_q(rk)}" for lk, rk in source.keys)
            joins.append(f"ASOF LEFT JOIN {alias} ON {on} AND l.{_q(left.event_time)} >= {alias}.{ts}")
            fresh = "TRUE"
            if source.max_lookback is not None:
                micros = int(source.max_lookback.total_seconds() * 1_000_000)
                fresh = f"{alias}.{ts} >= l.{_q(left.event_time)} - INTERVAL ({micros}) MICROSECONDS"
            select += [
                f"CASE WHEN {fresh} THEN {alias}.{_q(c)} END AS {_q(o)}"
                for c, o in zip(source.columns, source.outputs(), strict=True)
            ]
        order = ", ".join(f"l.{_q(c)}" for c in [left.event_time, *left_keys])
        query = f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM l {' '.join(joins)} ORDER BY {order}"
        return query, empties

    def _reader(self, plan: JoinPlan) -> tuple[duckdb.DuckDBPyConnection, pa.RecordBatchReader]:
        con = connect_duckdb()
        query, empties = self.sql(con, plan)
        for name, table in empties.items():
            con.register(name, table)
        return con, con.sql(query).to_arrow_reader(_BATCH_ROWS)

    def to_arrow(self, plan: JoinPlan) -> pa.Table:
        con, reader = self._reader(plan)
        try:
            return normalise(reader.read_all())
        finally:
            con.close()

    def write_parquet(
        self, plan: JoinPlan, out: SharedFS, tap: Callable[[pa.Table], None] | None = None
    ) -> int:
        con, reader = self._reader(plan)
        try:
            with out.open("part-00000.parquet", "wb") as handle:
                return write_parquet(reader, handle, tap)
        finally:
            con.close()
