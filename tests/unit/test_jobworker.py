"""The job worker's socket address (fjord/jobworker.py): a Unix socket's path holds at most 107 bytes,
and a test's or a deep home's is longer."""

from __future__ import annotations

import socket
from pathlib import Path

from fjord.jobworker import _addressable


def test_a_deep_home_gets_its_socket_through_its_folder(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*(["d" * 40] * 3))
    deep.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    with _addressable(deep / "w.sock") as address:
        assert address.startswith("/proc/self/fd/")
        server.bind(address)
    server.listen(1)
    client = socket.socket(socket.AF_UNIX)
    with _addressable(deep / "w.sock") as address:
        client.connect(address)
    assert (deep / "w.sock").is_socket()
    with _addressable(tmp_path / "w.sock") as address:  # a short path is itself
        assert address == str(tmp_path / "w.sock")
    client.close()
    server.close()


def test_each_job_starts_with_keras_as_a_new_process_has_it() -> None:
    """A layer's default name counts up in a process (``dense``, then ``dense_1``); after a job the
    worker resets it, so the next job's model is named as in a process of its own."""
    import tensorflow as tf

    from fjord.jobworker import _reset_keras

    _reset_keras()
    first = tf.keras.layers.Dense(1).name
    assert tf.keras.layers.Dense(1).name == f"{first}_1"  # the counter, as a second job would see it
    _reset_keras()
    assert tf.keras.layers.Dense(1).name == first
