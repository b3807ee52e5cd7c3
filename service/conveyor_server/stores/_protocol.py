"""The `TaskStore` protocol: the only way the servicer and runner touch state.

Every method is a coroutine so that stores backed by a database or a network
server can do real I/O without blocking the event loop. State changes are
atomic per call: a store never exposes a half-written task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from conveyor_server.stores._records import ListQuery, NewTask, Outcome, Progress, TaskRecord


class StoreError(Exception):
    """Base of the errors a store raises for a request it refuses."""


class QueueFull(StoreError):
    """Too many unfinished tasks: in all, or (`tenant` set) of one tenant."""

    def __init__(self, depth: int, limit: int, tenant: str | None = None) -> None:
        if tenant is None:
            message = f"queue is full: {depth} unfinished tasks, limit {limit}"
        else:
            message = f"tenant {tenant!r} has {depth} unfinished tasks, its quota is {limit}"
        super().__init__(message)
        self.depth = depth
        self.limit = limit
        self.tenant = tenant


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


class StoreListener(Protocol):
    """What a store tells the runner of its process, on the event loop.

    A store shared by several processes calls these when another process
    (or this one) makes a change the runner must act on.
    """

    def work_available(self) -> None:
        """Tasks may have become claimable: look for work now."""
        ...

    def cancel_requested(self, task_id: str) -> None:
        """A cancel was asked for a running task; stop it if it runs here."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """What `renew` found out about the attempts a runner holds."""

    # Attempts this runner no longer holds (the lease lapsed and the task was
    # re-queued or finished elsewhere): stop them without reporting.
    lost: list[str] = field(default_factory=list)
    # Attempts whose task has a cancel request: stop them.
    cancel_requested: list[str] = field(default_factory=list)


class SubscriptionOwner(Protocol):
    def _unsubscribe(self, subscription: LatestSubscription) -> None: ...


class LatestSubscription:
    """Latest-only mailbox for one watcher of one task: the subscription
    every store hands out, fed by its store on the event loop.

    Holds at most one record and, while its reader waits, one future: a
    watcher costs a few hundred bytes here, which matters at tens of
    thousands of streams.
    """

    __slots__ = ("_closed", "_latest", "_store", "_waiter", "task_id")

    def __init__(self, store: SubscriptionOwner, task_id: str) -> None:
        self._store = store
        self.task_id = task_id
        self._latest: TaskRecord | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def deliver(self, record: TaskRecord) -> None:
        self._latest = record
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> TaskRecord:
        while self._latest is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        record, self._latest = self._latest, None
        return record

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._unsubscribe(self)


class TaskStore(Protocol):
    """Persistence, queueing and change events for tasks.

    Leases: a store shared by several processes (`lease_seconds` is not
    None) gives each claimed attempt a lease of that many seconds. The runner
    renews the leases of its running attempts every third of that, and every
    process calls `reap` now and then to re-queue attempts whose lease
    lapsed (their process died). Fencing by attempt number keeps a late
    report of a lapsed attempt from overwriting a newer one.
    Stores of one process set `lease_seconds` and `poll_interval` to None.
    """

    @property
    def lease_seconds(self) -> float | None: ...

    @property
    def poll_interval(self) -> float | None:
        """How often the runner looks for work it may not have been told
        about (a lost notification); None when every change is notified."""
        ...

    async def signing_key(self) -> bytes:
        """A secret that every process on this store shares, to sign list
        page tokens: a token one replica minted is good on another."""
        ...

    def attach(self, listener: StoreListener) -> None:
        """Set who hears of work and cancel requests (the local runner)."""
        ...

    async def renew(self, leases: Sequence[tuple[str, int]], now: float) -> LeaseReport:
        """Extend the leases of these running (task id, attempt) pairs."""
        ...

    async def reap(self, now: float) -> int:
        """Handle running attempts whose lease lapsed before `now` minus a
        margin for clock skew: re-queue the task when it has attempts left
        (the interrupted attempt counts), else fail it with INTERRUPTED.
        Returns how many were handled."""
        ...

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
        """Cancel a pending task at once or flag a running one; the flag
        reaches the listener of the process running it (`cancel_requested`).

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
