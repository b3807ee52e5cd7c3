"""The `TaskStore` protocol: the only way the servicer and runner touch state.

Every method is a coroutine so that stores backed by a database or a network
server can do real I/O without blocking the event loop. State changes are
atomic per call: a store never exposes a half-written task.

Signals have one owner: the store. It alone tells its listener (the runner
of its process) that work became due and that a running attempt is asked to
stop, whichever process made the change; nobody else wakes the runner.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from conveyor_server.stores._feed import FeedFilter, FeedReader
from conveyor_server.stores._logs import LogBatch, LogCursor, LogPage
from conveyor_server.stores._records import (
    BacklogGauge,
    Cancellation,
    ListQuery,
    NewTask,
    Outcome,
    PendingExplanation,
    Progress,
    ScheduleRecord,
    State,
    TaskRecord,
    TypeCounts,
    TypeLimits,
    TypeSettings,
)
from conveyor_server.stores._workers import WorkerInfo


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

    A store calls these for changes made by any process, this one included,
    once they are durable.
    """

    def work_available(self, due_time: float | None = None) -> None:
        """Tasks become claimable at `due_time` (now when None): look for
        work then."""
        ...

    def cancel_requested(self, task_id: str) -> None:
        """A stop was asked of a running task; stop it if it runs here. May
        be told more than once."""
        ...

    def attempt_lost(self, task_id: str, claim: int) -> None:
        """This process no longer holds claim `claim` of the task (on a store
        shared by several processes, its lease lapsed and another process
        took over): stop it without reporting."""
        ...


class TaskStore(Protocol):
    """Persistence, queueing and change events for tasks.

    Fencing by claim number keeps a late report of an attempt that is no
    longer the task's running one from overwriting a newer state. Every
    claim of a task gets a greater number than the last, whatever happened
    in between (a RetryTask, a hand-back), so the number tells claims apart
    where the attempt number, which starts again, cannot.
    """

    @property
    def shared(self) -> bool:
        """Whether other processes can open this store too (and so run its
        tasks in worker processes); False for a store of one process."""
        ...

    async def signing_key(self) -> bytes:
        """A secret that every process on this store shares, to sign list
        page tokens: a token one replica minted is good on another."""
        ...

    def attach(self, listener: StoreListener) -> None:
        """Set who hears of due work and cancel requests (the local runner),
        and start whatever upkeep claims of this process need."""
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

    async def claim(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        """Move up to `limit` due tasks of `types` to RUNNING (priority, then
        the order they became due, across the types) and return them with
        their attempt number increased and a new claim number, greater than
        every earlier one of the task: what the runner's reports of the
        attempt name it by. Tasks of other types are not looked at."""
        ...

    async def next_due_time(self) -> float | None:
        """When the earliest delayed task becomes due, if any is waiting."""
        ...

    async def set_progress(self, updates: Sequence[tuple[str, int, Progress]], now: float) -> None:
        """Record progress of running attempts, each named by (task id,
        claim number); a claim that no longer holds its task is ignored."""
        ...

    async def complete(self, outcomes: Sequence[Outcome], now: float) -> list[TaskRecord]:
        """Record how attempts ended and return the changed records.

        An outcome whose claim no longer holds the task (fencing: the task
        was claimed again since, or is no longer running) is ignored.
        """
        ...

    async def settle(
        self, outcomes: Sequence[Outcome], limit: int, now: float, types: Collection[str]
    ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """A runner's round: `complete(outcomes)`, then `claim(limit, types)`;
        returns what each returns. A store that can do both in one step
        (one script, one transaction) does."""
        ...

    async def requeue(self, task_id: str, claim: int, now: float) -> TaskRecord | None:
        """Hand a running attempt back to the queue without spending it;
        None when claim `claim` no longer holds the task."""
        ...

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> Cancellation | None:
        """Cancel a pending task at once or flag a running one; the flag
        reaches the listener of the process running it (`cancel_requested`).

        Returns None for an unknown id, else the task and what the call did;
        raises InvalidTransition for a SUCCEEDED or FAILED task.
        """
        ...

    async def retry(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        """Queue a FAILED or CANCELLED task again with fresh attempts."""
        ...

    async def register_worker(self, worker: WorkerInfo) -> None:
        """Add or refresh the entry of a process that runs tasks; it counts
        as alive until `worker.heartbeat + worker.ttl`."""
        ...

    async def unregister_worker(self, worker_id: str) -> None:
        """Drop a worker's entry at once: it stopped."""
        ...

    async def live_workers(self, now: float) -> list[WorkerInfo]:
        """The workers alive at `now`, oldest first; dead entries go."""
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

    async def follow(self, feed_filter: FeedFilter, cursor: str | None = None) -> FeedReader:
        """Follow the store's change feed: every durable change of a task
        matching `feed_filter`, the latest per task, after `cursor` (a
        message's) or from now on; close the reader when done. Changes made
        once this returns are all seen."""
        ...

    # -- task logs ------------------------------------------------------------

    async def append_logs(self, batches: Sequence[LogBatch]) -> None:
        """Keep lines handlers wrote, in a ring of the latest
        `MAX_LINES_PER_ATTEMPT` per attempt (see `_logs`); lines of a task
        that is gone are dropped. Dropping a task (retention, purge) drops
        its lines."""
        ...

    async def read_logs(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        """Up to `limit` lines of the task after `after`, in (attempt,
        sequence) order, of attempt `attempt` only unless it is 0. The
        caller checks the task is visible to its tenant."""
        ...

    # -- limits, per task type --------------------------------------------
    #
    # `claim` enforces them for every process of the store: a type's
    # max_running, its max_running_per_key per (tenant, concurrency key),
    # its token bucket of max_starts_per_second, and its pause; and takes
    # due tasks of one priority in turn across tenants, then across the
    # concurrency keys of a tenant. A task over a limit stays PENDING and
    # queued; when a limit frees (a task of the type leaves RUNNING, the
    # bucket refills, the type resumes, a limit is raised) the store tells
    # its listener of work, and `next_due_time` counts the bucket's refill.

    async def declare_type_defaults(self, defaults: Mapping[str, TypeLimits], now: float) -> None:
        """Record the limits the handlers of these types declare (each
        process that serves a type declares them at start; the last one
        wins)."""
        ...

    async def update_type(
        self,
        task_type: str,
        now: float,
        *,
        limits: Mapping[str, float] | None = None,
        restore: Collection[str] = (),
        paused: bool | None = None,
    ) -> TypeSettings:
        """Change a type's settings at run time, for every process: set the
        overrides in `limits` (limit name -> value, 0 for none), drop those
        named in `restore` (back to the declared default), pause or resume.
        Returns the settings after the change."""
        ...

    async def type_settings(self) -> dict[str, TypeSettings]:
        """Every type with declared defaults or run-time settings."""
        ...

    async def type_counts(self) -> dict[str, TypeCounts]:
        """Running and pending tasks per type, across tenants (types with
        none may be left out)."""
        ...

    async def backlog(self, now: float) -> list[BacklogGauge]:
        """The unfinished tasks per (type, tenant) at `now`, every
        process's: pending, due, running and the oldest due time, for the
        autoscaling gauges; pairs with none are left out. Read at scrape
        time, never on the path of a claim: a store answers from what it
        keeps anyway, with work bounded however many tenants there are."""
        ...

    async def pending_reason(self, record: TaskRecord, now: float) -> PendingExplanation:
        """Why the due PENDING task `record` (as just read; no dependency
        unfinished, not delayed: the caller tells those from the record)
        waits, as far as the limits tell: TYPE_PAUSED, CONCURRENCY_LIMIT,
        KEY_CONCURRENCY_LIMIT or RATE_LIMIT, with the figures in the message,
        else QUEUED."""
        ...

    # -- schedules ----------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        """Store a new schedule; raises ScheduleExists when its tenant has
        one of that id."""
        ...

    async def get_schedule(self, tenant: str, schedule_id: str) -> ScheduleRecord | None: ...

    async def list_schedules(self, tenant: str | None = None) -> list[ScheduleRecord]:
        """The schedules of `tenant` (of every tenant when None), by id."""
        ...

    async def replace_schedule(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        """Replace a schedule's spec, paused flag and update time, keeping
        its create time and `fired_until` as stored, if its update time is
        still `read_update_time` (that of the copy the change was made
        from: two changes made at once never undo one another). Returns it
        as stored after; None when it does not exist or changed since."""
        ...

    async def advance_schedule(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        """Raise a schedule's `fired_until` to this time (never lower it); a
        schedule that is gone is left gone."""
        ...

    async def delete_schedule(self, tenant: str, schedule_id: str) -> bool: ...

    async def close(self) -> None: ...


def announce(listener: StoreListener | None, record: TaskRecord) -> None:
    """Tell `listener` what a durable change of `record` means for a runner:
    a pending task is due at its time, unless it waits for dependencies; a
    running one may be asked to stop. The one rule every store applies to
    its changes."""
    if listener is None:
        return
    state = record.state
    if state is State.PENDING:
        if not record.waiting:
            listener.work_available(record.scheduled_time)
    elif state is State.RUNNING and record.cancel_requested:
        listener.cancel_requested(record.id)
