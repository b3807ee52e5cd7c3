"""What a running handler sees of its task."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor_server._convert import result_to_python
from conveyor_server._task_logs import AttemptLines, TaskLogger
from conveyor_server.stores import Progress, State, TaskFailure, TaskRecord

logger = logging.getLogger("conveyor_server.tasks")
_EVENT_LOCK = threading.Lock()


class TaskCancelled(Exception):
    """Raised by `TaskContext.raise_if_cancelled` once the task is asked to stop."""


@dataclass(frozen=True, slots=True)
class Dependency:
    """A task this one depends on, as read when the handler asked
    (`TaskContext.dependencies`)."""

    id: str
    # "SUCCEEDED", "FAILED" or "CANCELLED"; "PENDING" or "RUNNING" only when
    # this task was retried (RetryTask runs it at once, without waiting);
    # "" when the task is gone, dropped after its retention period.
    state: str
    # What its handler returned, when it SUCCEEDED.
    result: Any = None
    # Why it failed or was cancelled.
    error: TaskFailure | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == State.SUCCEEDED.name

    @staticmethod
    def of(task_id: str, record: TaskRecord | None) -> Dependency:
        if record is None:
            return Dependency(task_id, "")
        result = None
        if record.state is State.SUCCEEDED and record.result is not None:
            result = result_to_python(record.result)
        return Dependency(task_id, record.state.name, result, record.error)


# Reads the dependencies of a task, for the handler's thread.
DependencyReader = Callable[["TaskContext"], Sequence[Dependency]]


class TaskContext:
    """Handed to every handler call; safe to use from the handler's thread.

    >>> def handler(ctx, payload):
    ...     for i, row in enumerate(rows):
    ...         if ctx.cancelled:
    ...             return None
    ...         ctx.report_progress(100 * i / len(rows), f"row {i}")
    """

    __slots__ = (
        "_dependencies",
        "_lines",
        "_logger",
        "_on_progress",
        "_read_dependencies",
        "_stop_event",
        "_stop_reason",
        "_stopped",
        "attempt",
        "depends_on",
        "labels",
        "max_attempts",
        "task_id",
        "tenant",
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
        tenant: str = "",
        depends_on: tuple[str, ...] = (),
        read_dependencies: DependencyReader | None = None,
        lines: AttemptLines | None = None,
    ) -> None:
        self.task_id = task_id
        # The tenant that submitted the task ("" without auth tenants).
        self.tenant = tenant
        self.type = type
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.labels = labels
        # The ids of the tasks this one waited for, as submitted.
        self.depends_on = depends_on
        self._read_dependencies = read_dependencies
        self._dependencies: dict[str, Dependency] | None = None
        self._on_progress = on_progress
        # Where the lines of `logger` are kept for the task's logs.
        self._lines = lines
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        # Most handlers never wait on their context, so the Event (a lock and
        # a condition) is made only when one does.
        self._stopped = False
        self._stop_event: threading.Event | None = None
        self._stop_reason: str | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the task id, type and attempt; its
        lines are kept with the task, per attempt (GetTaskLogs): never log
        secrets through it."""
        if self._logger is None:
            self._logger = TaskLogger(
                logger,
                {"task_id": self.task_id, "task_type": self.type, "attempt": self.attempt},
                self._lines,
            )
        return self._logger

    @property
    def cancelled(self) -> bool:
        """True once the task is asked to stop: cancelled, timed out, or the
        server is shutting down."""
        return self._stopped

    @property
    def stop_reason(self) -> str | None:
        """ "cancelled", "timeout" or "shutdown" once asked to stop."""
        return self._stop_reason

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True early if asked to stop."""
        if self._stopped:
            return True
        event = self._stop_event
        if event is None:
            with _EVENT_LOCK:
                if self._stop_event is None:
                    self._stop_event = threading.Event()
                event = self._stop_event
        # Checked again after publishing the event: request_stop either saw
        # the event or set the flag before this read.
        if self._stopped:
            return True
        return event.wait(seconds)

    def raise_if_cancelled(self) -> None:
        if self._stopped:
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

    def dependencies(self) -> dict[str, Dependency]:
        """The tasks this one depends on, by id in `depends_on` order: their
        state, and their result or error. Read from the store on the first
        call (which waits for it), then remembered: the tasks are finished.

        >>> def total(ctx, payload):
        ...     parts = ctx.dependencies().values()
        ...     return {
        ...         "sum": sum(d.result["count"] for d in parts if d.succeeded),
        ...         "failed": [d.id for d in parts if not d.succeeded],
        ...     }
        """
        if self._dependencies is None:
            read = self._read_dependencies
            found = read(self) if self.depends_on and read is not None else ()
            self._dependencies = {dependency.id: dependency for dependency in found}
        return dict(self._dependencies)

    def dependency_results(self) -> dict[str, Any]:
        """The results of the tasks this one depends on that SUCCEEDED, by
        id: with `run_on_dependency_failure` the others are left out (see
        `dependencies` for their errors)."""
        return {
            task_id: dependency.result
            for task_id, dependency in self.dependencies().items()
            if dependency.succeeded
        }

    def request_stop(self, reason: str) -> None:
        """Used by the runner; handlers observe it through `cancelled`."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopped = True
        event = self._stop_event
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, type={self.type!r}, attempt={self.attempt})"
