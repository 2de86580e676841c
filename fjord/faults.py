"""Crash points: where a test may kill a process, to prove that a commit protocol survives it.

``FJORD_CRASH_AT=publish.delta_committed#2`` makes the process exit at once (``os._exit``: no
``finally``, no ``atexit``, as a SIGKILL or a lost host would) the second time it passes
``crash_point("publish.delta_committed")``; without ``#n``, the first time. Unset, a crash point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
from collections import Counter

CRASH_EXIT_CODE = 86
_passed: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Exit the process here if ``FJORD_CRASH_AT`` names this point (and this pass)."""
    target = os.environ.get("FJORD_CRASH_AT")
    if not target:
        return
    point, _, count = target.partition("#")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(count or 1):
        os._exit(CRASH_EXIT_CODE)


def reset() -> None:
    """Forget the passes counted so far: a warm worker's next job counts its own (fjord/jobworker.py)."""
    _passed.clear()
