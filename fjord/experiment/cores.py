"""CPU cores for trial processes: each trial runs on cores that no other trial on its host holds.

A Spark task slot is a promise of ``spark.task.cpus`` cores, but nothing keeps a TensorFlow process
to them: its thread pools (intra-op, inter-op, tf.data) size themselves to every core they can see.
Two trials on a two-core host then each spread over both cores and slow each other down. YARN and
Kubernetes containers pin each task to its share of cores; so does Fjord, with one lock file per
core in the host's temporary directory. A lock is held while the trial runs and is released by the
kernel if the holder dies. TensorFlow reads the process's CPU affinity to size its pools, so a
pinned trial uses exactly its cores.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "fjord-cores"


@contextmanager
def reserved_cores(count: int) -> Iterator[set[int] | None]:
    """Hold ``count`` cores of this host that no other trial holds, or ``None`` when there are not
    that many free (more task slots than cores): the trial then runs unpinned, as before."""
    available = sorted(os.sched_getaffinity(0))
    if count >= len(available):
        yield None  # the trial may use the whole host: nothing to pin
        return
    LOCK_DIR.mkdir(exist_ok=True)
    with ExitStack() as held:
        cores: set[int] = set()
        for core in available:
            handle = held.enter_context((LOCK_DIR / f"cpu{core}.lock").open("a"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            cores.add(core)
            if len(cores) == count:
                break
        if len(cores) < count:
            held.close()  # not enough: give back what was taken, for the trials that fit
            yield None
        else:
            yield cores
