"""The `TaskStore` protocol: the only way the servicer and runner touch state.

Every method is a coroutine so that stores backed by a database or a network
server can do real I/O without blocking the event loop. State changes are
atomic per call: a store never exposes a half-written task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from conveyor_server._model import ListQuery, NewTask, Outcome, Progress, TaskRecord


class StoreError(Exception):
    """Base of the errors a store raises for a request it refuses."""


class QueueFull(StoreError):
    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"queue is full: {depth} unfinished tasks, limit {limit}")
        self.depth = depth
        self.limit = limit


class IdempotencyConflict(StoreError):
    """A key seen before with a different request; `task_id` is None when
    the earlier use is in the same batch."""

    def __init__(self, key: str, task_id: str | None) -> None:
        where = f"by task {task_id}" if task_id is not None else "earlier in this batch"
        super().__init__(
            f"idempotency key {key!r} was already used {where} with a different request"
        )
        self.key = key
        self.task_id = task_id


class InvalidTransition(StoreError):
    """The task is not in a state that allows the change (cancel, retry)."""

    def __init__(self, record: TaskRecord, message: str) -> None:
        super().__init__(message)
        self.record = record


class StoreUnavailable(StoreError):
    """The backing store cannot be reached; the call may be retried."""


class TaskSubscription(Protocol):
    """Change notifications for one task.

    `next()` waits for a change after the last one returned and gives the
    latest snapshot; changes that happen while nobody waits are folded into
    one, so a slow reader never builds a backlog.
    """

    async def next(self) -> TaskRecord: ...

    def close(self) -> None: ...


class TaskStore(Protocol):
    """Persistence, queueing and change events for tasks."""

    async def create(self, tasks: Sequence[NewTask], now: float) -> list[TaskRecord]:
        """Accept tasks all together, or none.

        A task whose idempotency key matches an earlier one with the same
        fingerprint returns the earlier record instead of a new one.
        Raises QueueFull or IdempotencyConflict.
        """
        ...

    async def get(self, task_id: str, tenant: str = "") -> TaskRecord | None: ...

    async def list_page(self, query: ListQuery) -> tuple[list[TaskRecord], int | None]:
        """A page of tasks, newest first, and the cursor of the next page."""
        ...

    async def claim(self, limit: int, now: float) -> list[TaskRecord]:
        """Move up to `limit` due tasks to RUNNING (priority, then age) and
        return them with their attempt number increased."""
        ...

    async def next_due_time(self) -> float | None:
        """When the earliest delayed task becomes due, if any is waiting."""
        ...

    async def set_progress(self, updates: Sequence[tuple[str, int, Progress]], now: float) -> None:
        """Record progress of running attempts; stale attempts are ignored."""
        ...

    async def complete(self, outcomes: Sequence[Outcome], now: float) -> list[TaskRecord]:
        """Record how attempts ended and return the changed records.

        An outcome whose attempt is no longer the task's running attempt
        (fencing) is ignored.
        """
        ...

    async def requeue(self, task_id: str, attempt: int, now: float) -> TaskRecord | None:
        """Hand a running attempt back to the queue without spending it."""
        ...

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        """Cancel a pending task at once or flag a running one.

        Returns None for an unknown id; raises InvalidTransition for a
        SUCCEEDED or FAILED task.
        """
        ...

    async def retry(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        """Queue a FAILED or CANCELLED task again with fresh attempts."""
        ...

    async def purge(self, finished_before: float) -> int:
        """Drop finished tasks that ended before the given time."""
        ...

    async def depth(self) -> int:
        """Unfinished (pending and running) tasks."""
        ...

    def subscribe(self, task_id: str) -> TaskSubscription:
        """Follow changes of one task; close the subscription when done."""
        ...

    async def close(self) -> None: ...
