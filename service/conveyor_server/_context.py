"""What a running handler sees of its task."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping

from conveyor_server._model import Progress

logger = logging.getLogger("conveyor_server.tasks")


class TaskCancelled(Exception):
    """Raised by `TaskContext.raise_if_cancelled` once the task is asked to stop."""


class TaskContext:
    """Handed to every handler call; safe to use from the handler's thread.

    >>> def handler(ctx, payload):
    ...     for i, row in enumerate(rows):
    ...         if ctx.cancelled:
    ...             return None
    ...         ctx.report_progress(100 * i / len(rows), f"row {i}")
    """

    __slots__ = (
        "_on_progress",
        "_stop",
        "_stop_reason",
        "attempt",
        "labels",
        "logger",
        "max_attempts",
        "task_id",
        "type",
    )

    def __init__(
        self,
        *,
        task_id: str,
        type: str,
        attempt: int,
        max_attempts: int,
        labels: Mapping[str, str],
        on_progress: Callable[[TaskContext, Progress], None],
    ) -> None:
        self.task_id = task_id
        self.type = type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.labels = labels
        self.logger = logging.LoggerAdapter(
            logger, {"task_id": task_id, "task_type": type, "attempt": attempt}
        )
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._stop_reason: str | None = None

    @property
    def cancelled(self) -> bool:
        """True once the task is asked to stop: cancelled, timed out, or the
        server is shutting down."""
        return self._stop.is_set()

    @property
    def stop_reason(self) -> str | None:
        """ "cancelled", "timeout" or "shutdown" once asked to stop."""
        return self._stop_reason

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True early if asked to stop."""
        return self._stop.wait(seconds)

    def raise_if_cancelled(self) -> None:
        if self._stop.is_set():
            raise TaskCancelled(self._stop_reason or "cancelled")

    def report_progress(
        self,
        percent: float,
        message: str = "",
        *,
        current: int = 0,
        total: int = 0,
    ) -> None:
        """Publish progress; watchers see it at once. Cheap to call often:
        updates that arrive faster than the server applies them are folded
        into the latest."""
        if not math.isfinite(percent):
            raise ValueError(f"percent must be a finite number, got {percent!r}")
        percent = min(100.0, max(0.0, float(percent)))
        self._on_progress(self, Progress(percent, str(message)[:1024], int(current), int(total)))

    def request_stop(self, reason: str) -> None:
        """Used by the runner; handlers observe it through `cancelled`."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, type={self.type!r}, attempt={self.attempt})"
