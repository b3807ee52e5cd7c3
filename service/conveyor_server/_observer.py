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

    def http_handled(self, route: str, status: int, seconds: float | None) -> None:
        """An HTTP/JSON API request ended with HTTP `status`; `route` is its
        pattern ("GET /v1/tasks/{id}"); `seconds` is None for an event stream."""
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

    def http_handled(self, route: str, status: int, seconds: float | None) -> None:
        pass


class ObserverPair:
    """Tells two observers everything: the metrics and the engine's own
    throughput record."""

    def __init__(self, first: TaskObserver, second: TaskObserver) -> None:
        self._first = first
        self._second = second

    def tasks_submitted(self, records: Sequence[TaskRecord], now: float) -> None:
        self._first.tasks_submitted(records, now)
        self._second.tasks_submitted(records, now)

    def tasks_started(self, records: Sequence[TaskRecord], now: float) -> None:
        self._first.tasks_started(records, now)
        self._second.tasks_started(records, now)

    def attempts_ended(self, records: Sequence[TaskRecord], now: float) -> None:
        self._first.attempts_ended(records, now)
        self._second.attempts_ended(records, now)

    def task_cancelled(self, record: TaskRecord) -> None:
        self._first.task_cancelled(record)
        self._second.task_cancelled(record)

    def rpc_handled(self, method: str, code: str, seconds: float | None) -> None:
        self._first.rpc_handled(method, code, seconds)
        self._second.rpc_handled(method, code, seconds)

    def http_handled(self, route: str, status: int, seconds: float | None) -> None:
        self._first.http_handled(route, status, seconds)
        self._second.http_handled(route, status, seconds)


NULL_OBSERVER: TaskObserver = NullObserver()
