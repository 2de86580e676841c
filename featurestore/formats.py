"""File formats: streamed Parquet writing, and TFRecord files of ``tf.train.Example`` for tf.data input."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from featurestore.schema import normalise
from fjord.fs import SharedFS, arrow_scan


def write_parquet(
    reader: pa.RecordBatchReader,
    handle: IO[Any],
    tap: Callable[[pa.Table], None] | None = None,
    while_writing: Callable[[], None] | None = None,
) -> int:
    """Stream ``reader``'s batches, normalised, into one Parquet file at ``handle``; rows written.
    ``tap`` sees each batch as written (an empty table when there are no rows).

    Memory holds one batch at a time (and what ``tap`` keeps). With no rows, the file is still
    valid: empty, with the schema.
    Floating-point columns are not dictionary-encoded: their values rarely repeat, so Arrow builds a
    dictionary only to fall back from it (a training dataset of 1M rows x 20 float features is
    written in 0.22 s instead of 0.38 s, 1% larger).

    With ``while_writing``, a thread writes the batches behind the reading (memory then holds the
    batches not yet written: for a caller whose ``tap`` keeps them anyway), and ``while_writing``
    runs on this thread once every batch is read, while the thread finishes: a training dataset's
    statistics (0.28 s for 1M x 21 columns) and its write (0.2-0.36 s) overlap on two cores.
    """
    if while_writing is not None:
        return _write_behind(reader, handle, tap, while_writing)
    writer, rows = None, 0
    for batch in reader:
        table = normalise(pa.Table.from_batches([batch]))
        writer = writer or _parquet_writer(handle, table.schema)
        writer.write_table(table)
        rows += table.num_rows
        if tap:
            tap(table)
    if writer is None:
        empty = normalise(reader.schema.empty_table())
        writer = _parquet_writer(handle, empty.schema)
        if tap:
            tap(empty)
    writer.close()
    return rows


def _write_behind(
    reader: pa.RecordBatchReader,
    handle: IO[Any],
    tap: Callable[[pa.Table], None] | None,
    while_writing: Callable[[], None],
) -> int:
    """:func:`write_parquet` with a writer thread: see there."""
    pending: queue.SimpleQueue[pa.Table | None] = queue.SimpleQueue()
    failed: list[BaseException] = []

    def write() -> None:
        writer = None
        try:
            while (table := pending.get()) is not None:
                if not failed:  # after a failure, only drain what the reading side still hands over
                    writer = writer or _parquet_writer(handle, table.schema)
                    writer.write_table(table)
            if writer is not None and not failed:
                writer.close()
        except BaseException as exc:  # handed to the reading side, which raises it
            failed.append(exc)
            while pending.get() is not None:
                pass

    thread = threading.Thread(target=write, name="fjord-parquet-writer", daemon=True)
    thread.start()
    rows = 0
    try:
        for batch in reader:
            table = normalise(pa.Table.from_batches([batch]))
            pending.put(table)
            rows += table.num_rows
            if tap:
                tap(table)
        if rows == 0:  # the file is still valid: empty, with the schema
            empty = normalise(reader.schema.empty_table())
            pending.put(empty)
            if tap:
                tap(empty)
        pending.put(None)
        while_writing()
    except BaseException:
        failed.append(RuntimeError("the reading side failed"))  # the writer stops writing
        pending.put(None)
        thread.join()
        raise
    thread.join()
    if failed:
        raise failed[0]
    return rows


def _parquet_writer(handle: IO[Any], schema: pa.Schema) -> pq.ParquetWriter:
    dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(handle, schema, use_dictionary=dictionary)


def _feature(tf, value: object, type_: pa.DataType):  # type: ignore[no-untyped-def]
    train = tf.train
    if value is None:
        return train.Feature()  # a missing value: an empty list
    if pa.types.is_floating(type_):
        return train.Feature(float_list=train.FloatList(value=[value]))
    if pa.types.is_integer(type_) or pa.types.is_boolean(type_):
        return train.Feature(int64_list=train.Int64List(value=[int(value)]))
    if pa.types.is_timestamp(type_):
        return train.Feature(int64_list=train.Int64List(value=[int(value.timestamp() * 1_000_000)]))
    return train.Feature(bytes_list=train.BytesList(value=[str(value).encode()]))


def write_tfrecords(parquet: SharedFS, out: SharedFS) -> int:
    """Convert every Parquet file under ``parquet`` to one TFRecord file each in ``out``; rows written.

    Streams record batches, so memory stays bounded. Timestamps become int64 microseconds.
    """
    import tensorflow as tf  # heavy: only when TFRecords are asked for

    rows = 0
    filesystem, threads = arrow_scan(parquet.backend)
    for i, file in enumerate(parquet.find(suffix=".parquet")):
        dataset = ds.dataset(parquet.path(file), filesystem=filesystem, format="parquet")
        out.makedirs("")
        with tf.io.TFRecordWriter(out.uri(f"part-{i:05d}.tfrecord").removeprefix("file://")) as writer:
            for batch in dataset.to_batches(use_threads=threads):
                columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
                types = {field.name: field.type for field in batch.schema}
                for r in range(batch.num_rows):
                    features = {n: _feature(tf, columns[n][r], types[n]) for n in columns}
                    writer.write(
                        tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
                    )
                rows += batch.num_rows
    return rows
