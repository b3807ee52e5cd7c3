"""Capturing task logs: the lines a handler writes through `ctx.logger`.

Each attempt gets an `AttemptLines`: the handler's thread adds lines to it
(numbered, messages cut to `MAX_MESSAGE_BYTES`), and the first line since the
runner last looked posts it to the runner, which takes every waiting line of
the attempts posted in a round and writes them to the store in one call,
before the round's outcomes, as it does progress. So a line costs the
handler a lock and an append, and an attempt's lines are all stored by the
time the store says it ended.

Only what the handler logs is kept: the server adds no line of its own, and
never the payload, the result or a token. Handlers must not log secrets.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor_server.stores import LogBatch, LogEntry
from conveyor_server.stores._logs import MAX_LINES_PER_ATTEMPT, cut_message

_FIRST_LINE_LOCK = threading.Lock()

# The level names a line carries; others are named by the standard level at
# or below them.
_LEVELS = (
    (logging.CRITICAL, "CRITICAL"),
    (logging.ERROR, "ERROR"),
    (logging.WARNING, "WARNING"),
    (logging.INFO, "INFO"),
)


class AttemptLines:
    """The lines an attempt wrote that the runner has not taken yet: the
    latest `MAX_LINES_PER_ATTEMPT` (a store keeps no more); earlier ones are
    dropped, and counted by the numbering."""

    __slots__ = (
        "_clock",
        "_lock",
        "_on_ready",
        "_pending",
        "_posted",
        "_sequence",
        "attempt",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        attempt: int,
        on_ready: Callable[[AttemptLines], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.task_id = task_id
        # The runner's: a line's time agrees with the task's times.
        self._clock = clock
        self.attempt = attempt
        self._on_ready = on_ready
        # Made by the first line: most attempts log nothing.
        self._lock: threading.Lock | None = None
        self._pending: deque[LogEntry] = deque(maxlen=0)
        self._sequence = 0
        self._posted = False

    def add(self, level: str, message: str) -> None:
        lock = self._lock
        if lock is None:
            with _FIRST_LINE_LOCK:
                if self._lock is None:
                    self._pending = deque(maxlen=MAX_LINES_PER_ATTEMPT)
                    self._lock = threading.Lock()
                lock = self._lock
        with lock:
            self._sequence += 1
            self._pending.append(
                LogEntry(self.attempt, self._sequence, self._clock(), level, cut_message(message))
            )
            post = not self._posted
            self._posted = True
        if post:
            self._on_ready(self)

    def take(self) -> LogBatch | None:
        """The lines waiting; the next line posts the attempt again."""
        lock = self._lock
        if lock is None:
            return None
        with lock:
            entries = tuple(self._pending)
            self._pending.clear()
            self._posted = False
        return LogBatch(self.task_id, self.attempt, entries) if entries else None


@dataclass(frozen=True, slots=True)
class LinesPosted:
    """An attempt has lines for the runner to take."""

    lines: AttemptLines


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """`ctx.logger`: logs as any logger does, with the task's fields, and
    keeps each line for the task's logs: INFO and above, and DEBUG when the
    logger is enabled for it."""

    def __init__(
        self, logger: logging.Logger, extra: dict[str, Any], lines: AttemptLines | None
    ) -> None:
        super().__init__(logger, extra)
        self._lines = lines

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        lines = self._lines
        if lines is not None and (level >= logging.INFO or self.logger.isEnabledFor(level)):
            lines.add(level_name(level), render(msg, args, kwargs.get("exc_info")))
        # Records name the handler's line, not this method's.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        super().log(level, msg, *args, **kwargs)


def level_name(level: int) -> str:
    for threshold, name in _LEVELS:
        if level >= threshold:
            return name
    return "DEBUG"


def render(msg: object, args: tuple[Any, ...], exc_info: object) -> str:
    """The line as a formatter without a format would write it: the message
    with its arguments, then the traceback of `exc_info`, if any."""
    text = str(msg)
    if args:
        try:
            text = text % args
        except (TypeError, ValueError):
            text = f"{text} {args!r}"
    info: Any = exc_info
    if isinstance(info, BaseException):
        info = (type(info), info, info.__traceback__)
    elif info and not isinstance(info, tuple):
        info = sys.exc_info()
    if isinstance(info, tuple) and info[0] is not None:
        text += "\n" + logging.Formatter().formatException(info).rstrip()
    return text
