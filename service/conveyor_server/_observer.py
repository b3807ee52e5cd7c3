"""What the servicer and the runner report as they work, for metrics.

The runner and the servicer call a `TaskObserver` at the points where a task
changes state or an RPC ends; `conveyor_server._metrics` turns the calls into
Prometheus metrics. Every call comes from the event loop's thread, so an
observer needs no locks of its own for what it records there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from conveyor_server.stores import TaskRecord


class TaskObserver(Protocol):
    def tasks_submitted(self, records: Sequence[TaskRecord], now: float) -> None:
        """A submit returned these records; `now` is the time given to the
        store, which stamps new records with it (a repeat of an idempotent
        submit returns an older record)."""
        ...

    def tasks_started(self, records: Sequence[TaskRecord], now: float) -> None:
        """The runner claimed these tasks at `now` and starts an attempt of each."""
        ...

    def attempts_ended(self, records: Sequence[TaskRecord], now: float) -> None:
        """The store recorded how these attempts ended: each record is
        SUCCEEDED, FAILED or CANCELLED, or PENDING for a retry."""
        ...

    def task_cancelled(self, record: TaskRecord) -> None:
        """A pending task was cancelled before any attempt of it ran."""
        ...

    def rpc_handled(self, method: str, code: str, seconds: float | None) -> None:
        """A TaskService call ended with a gRPC status `code` (its name);
        `seconds` is None for a stream."""
        ...


class NullObserver:
    """Records nothing: the observer of a server with metrics off."""

    def tasks_submitted(self, records: Sequence[TaskRecord], now: float) -> None:
        pass

    def tasks_started(self, records: Sequence[TaskRecord], now: float) -> None:
        pass

    def attempts_ended(self, records: Sequence[TaskRecord], now: float) -> None:
        pass

    def task_cancelled(self, record: TaskRecord) -> None:
        pass

    def rpc_handled(self, method: str, code: str, seconds: float | None) -> None:
        pass


NULL_OBSERVER: TaskObserver = NullObserver()
