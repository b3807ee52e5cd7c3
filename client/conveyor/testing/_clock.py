"""TestClock: the time a test server reads, moved only by the test."""

from __future__ import annotations

import threading
import time


class TestClock:
    """A clock that stands still until `advance` moves it.

    It starts at the wall clock's time, so task times read as today's, and
    is safe to read and move from any thread.
    """

    __test__ = False  # not a test class, whatever pytest guesses from the name

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock `seconds` forward; returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock moves forward only; got advance({seconds})")
        with self._lock:
            self._now += seconds
            return self._now
