"""Waiting on a condition, never on the clock: tests poll the state they need (a record seen, a file
present, a state reached) and fail with what they waited for when it never comes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 60,
    what: str = "condition",
    *,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition()`` until it returns something true; that value. ``timeout`` only bounds a hang:
    a test asserts on the condition, not on how long it took. Exceptions in ``ignore`` (a server not
    listening yet) count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
