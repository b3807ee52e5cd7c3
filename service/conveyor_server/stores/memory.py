"""`memory://`: the default store. Fast, bounded, and lost on restart."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from conveyor_server._ids import new_task_id
from conveyor_server.stores._backlog import count_backlog
from conveyor_server.stores._book import LocalBook, Saved
from conveyor_server.stores._dependencies import (
    Dependents,
    dependency_failure,
    take_waiting,
    wait_for,
)
from conveyor_server.stores._errors import (
    IdempotencyConflict,
    InvalidTransition,
    QueueFull,
    UnknownDependency,
)
from conveyor_server.stores._feed import ChangeFeed, FeedFilter, FeedReader
from conveyor_server.stores._index import ListIndex
from conveyor_server.stores._logs import (
    KeptLogs,
    LogBatch,
    LogCursor,
    LogPage,
    MemoryLogs,
    last_entries,
)
from conveyor_server.stores._protocol import StoreListener, announce
from conveyor_server.stores._queue import DueQueue
from conveyor_server.stores._quota import TenantDepths
from conveyor_server.stores._records import (
    BacklogGauge,
    Cancellation,
    CancelOutcome,
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
from conveyor_server.stores._subscriptions import LatestSubscription
from conveyor_server.stores._workers import LocalWorkers, WorkerInfo

_DONE = Progress(100.0)


def _done_progress(progress: Progress | None) -> Progress:
    if progress is None or progress.percent == 100.0:
        return progress or _DONE
    return Progress(100.0, progress.message, progress.current, progress.total)


# What a request of a `create` call repeats (an existing record, or the
# index of an earlier request of the call), or None for a new task.
_Repeat = TaskRecord | int | None
# The dependencies of a new task: existing records, and indexes of earlier
# requests of the call.
_Dependencies = list[TaskRecord | int]


@dataclass(frozen=True, slots=True)
class Loaded:
    """What `MemoryStore.load` did beyond taking records in: the finished
    records it dropped to keep within retention_count, and those it changed
    (tasks whose dependency had failed, cancelled), for the caller to write
    back."""

    dropped: list[TaskRecord]
    changed: list[TaskRecord]


class MemoryStore:
    """In-process store: dicts and heaps, no I/O.

    All mutation happens on the event loop thread, so every method is atomic
    without locks.

    By default the store hands each change to its change feed and tells
    its listener of due work and cancel requests. A store that keeps its
    index here (`SqliteStore`) passes `publish`, which then gets every
    change instead, in the order made, `drop`, which gets every finished
    record dropped (retention or purge), and `save`, which gets every change
    of type settings and schedules. The listener still hears here of work
    that a limit stopped holding back, which is no change of a task.
    """

    def __init__(
        self,
        *,
        max_queue: int,
        retention_count: int,
        max_queue_per_tenant: int | None = None,
        publish: Callable[[TaskRecord], None] | None = None,
        drop: Callable[[TaskRecord], None] | None = None,
        save: Callable[[Saved], None] | None = None,
    ) -> None:
        self._max_queue = max_queue
        self._tenants = TenantDepths(max_queue_per_tenant)
        self._retention_count = retention_count
        self._tasks: dict[str, TaskRecord] = {}
        self._index = ListIndex()
        self._queue = DueQueue()
        self._workers = LocalWorkers()
        self._running: dict[str, TaskRecord] = {}
        self._finished: deque[TaskRecord] = deque()
        self._finished_count = 0
        self._unfinished = 0
        # Unfinished tasks per type; the running ones are the gates' count.
        self._unfinished_by_type: dict[str, int] = {}
        self._dependents: Dependents = {}
        self._keys: dict[tuple[str, str], TaskRecord] = {}
        self._feed = ChangeFeed()
        self._position = 0
        self._seq = 0
        self._listener: StoreListener | None = None
        self._signing_key = os.urandom(32)
        self._publish = self._tell if publish is None else publish
        self._drop_hook = drop
        self._book = LocalBook(save)
        self._logs = MemoryLogs()

    # -- one process: every change is seen here --------------------------

    @property
    def shared(self) -> bool:
        return False

    async def signing_key(self) -> bytes:
        return self._signing_key

    def attach(self, listener: StoreListener) -> None:
        self._listener = listener

    # -- writes ---------------------------------------------------------

    async def create(self, tasks: Sequence[NewTask], now: float) -> list[TaskRecord]:
        # Decide everything before changing anything: a batch is accepted
        # whole or not at all.
        plan = self._plan(tasks)
        fresh = plan.count(None)
        if fresh and self._unfinished + fresh > self._max_queue:
            raise QueueFull(self._unfinished, self._max_queue)
        if fresh and self._tenants.quota is not None:
            self._tenants.check(
                new.tenant for new, repeats in zip(tasks, plan, strict=True) if repeats is None
            )
        dependencies = self._dependencies_of(tasks, plan)

        records: list[TaskRecord] = []
        for index, (new, repeats) in enumerate(zip(tasks, plan, strict=True)):
            if isinstance(repeats, TaskRecord):
                records.append(repeats)
            elif isinstance(repeats, int):
                records.append(records[repeats])
            elif dependencies is not None and dependencies[index]:
                found = [records[d] if isinstance(d, int) else d for d in dependencies[index]]
                records.append(self._add_dependent(new, found, now))
            else:
                self._seq += 1
                record = new.record(new_task_id(), now, new.scheduled_time(now), self._seq)
                self._register(record)
                self._count_unfinished(record, 1)
                self._queue.push(record, now)
                self._publish(record)
                records.append(record)
        return records

    def _plan(self, tasks: Sequence[NewTask]) -> list[_Repeat]:
        """Per request, the task it repeats by its idempotency key; raises
        IdempotencyConflict."""
        plan: list[_Repeat] = []
        in_batch: dict[tuple[str, str], int] = {}
        for index, new in enumerate(tasks):
            key = new.idempotency_key
            if key is None:
                plan.append(None)
                continue
            slot = (new.tenant, key)
            existing = self._keys.get(slot)
            if existing is not None:
                if existing.fingerprint != new.fingerprint:
                    raise IdempotencyConflict(key, existing.id)
                plan.append(existing)
            elif slot in in_batch:
                if tasks[in_batch[slot]].fingerprint != new.fingerprint:
                    raise IdempotencyConflict(key, None)
                plan.append(in_batch[slot])
            else:
                in_batch[slot] = index
                plan.append(None)
        return plan

    def _dependencies_of(
        self, tasks: Sequence[NewTask], plan: list[_Repeat]
    ) -> list[_Dependencies] | None:
        """Per request, the dependencies of the new task it makes (none for
        a repeat), or None when no request names any; raises
        UnknownDependency for an id that is no task of the request's tenant."""
        if not any(new.depends_on or new.depends_on_requests for new in tasks):
            return None
        found: list[_Dependencies] = []
        for index, (new, repeats) in enumerate(zip(tasks, plan, strict=True)):
            depends: _Dependencies = []
            if repeats is None:
                for position, task_id in enumerate(new.depends_on):
                    record = self._tasks.get(task_id)
                    if record is None or record.tenant != new.tenant:
                        raise UnknownDependency(index, position, task_id)
                    depends.append(record)
                depends.extend(new.depends_on_requests)
            found.append(depends)
        return found

    def _add_dependent(
        self, new: NewTask, dependencies: list[TaskRecord], now: float
    ) -> TaskRecord:
        """Make the task of a request with dependencies: waiting for those
        unfinished, queued when none is, or, when one of them failed
        already, CANCELLED."""
        self._seq += 1
        unique = list({d.id: d for d in dependencies}.values())
        depends_on = tuple(d.id for d in unique)
        record = new.record(new_task_id(), now, new.scheduled_time(now), self._seq, depends_on)
        failure = wait_for(self._dependents, record, unique)
        if failure is not None:
            record.state = State.CANCELLED
            record.error = failure
            record.end_time = now
        self._register(record)
        if failure is None:
            self._count_unfinished(record, 1)
            if not record.waiting:
                self._queue.push(record, now)
        self._publish(record)
        if failure is not None:
            self._retire(record)
        return record

    def _register(self, record: TaskRecord) -> None:
        """Hold a new record: by id, in the listing index, by idempotency key."""
        self._tasks[record.id] = record
        self._index.add(record)
        if record.idempotency_key is not None:
            self._keys[(record.tenant, record.idempotency_key)] = record

    async def claim(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        claimed = self._queue.pop_due(limit, now, types)
        for record in claimed:
            self._set_state(record, State.RUNNING)
            record.attempt += 1
            record.claim += 1
            record.start_time = now
            record.update_time = now
            record.progress = None
            record.version += 1
            self._publish(record)
        return claimed

    async def next_due_time(self) -> float | None:
        return self._queue.next_due_time()

    async def register_worker(self, worker: WorkerInfo) -> None:
        self._workers.register(worker)

    async def unregister_worker(self, worker_id: str) -> None:
        self._workers.unregister(worker_id)

    async def live_workers(self, now: float) -> list[WorkerInfo]:
        return self._workers.live(now)

    async def set_progress(self, updates: Sequence[tuple[str, int, Progress]], now: float) -> None:
        for task_id, claim, progress in updates:
            record = self._running.get(task_id)
            if record is None or record.claim != claim:
                continue
            record.progress = progress
            record.update_time = now
            record.version += 1
            self._publish(record)

    async def settle(
        self, outcomes: Sequence[Outcome], limit: int, now: float, types: Collection[str]
    ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        ended = await self.complete(outcomes, now)
        # Records are live: one retried at once may be claimed below, and
        # the caller must see how its attempt ended, not the next one.
        ended = [r.copy() if r.state is State.PENDING else r for r in ended]
        return ended, await self.claim(limit, now, types)

    async def complete(self, outcomes: Sequence[Outcome], now: float) -> list[TaskRecord]:
        changed: list[TaskRecord] = []
        for outcome in outcomes:
            record = self._running.get(outcome.task_id)
            if record is None or record.claim != outcome.claim:
                continue  # fenced: a newer claim, or already finished
            if outcome.progress is not None:
                record.progress = outcome.progress
            if outcome.cancelled or record.cancel_requested:
                self._finish(record, State.CANCELLED, now)
            elif outcome.failure is None:
                record.result = outcome.result
                record.error = None
                record.progress = _done_progress(record.progress)
                self._finish(record, State.SUCCEEDED, now)
            else:
                record.error = outcome.failure
                if outcome.retry_at is not None:
                    self._make_pending(record, outcome.retry_at, now)
                else:
                    self._finish(record, State.FAILED, now)
            changed.append(record)
        return changed

    async def requeue(self, task_id: str, claim: int, now: float) -> TaskRecord | None:
        record = self._running.get(task_id)
        if record is None or record.claim != claim:
            return None
        record.attempt -= 1
        record.start_time = None
        record.progress = None
        self._make_pending(record, now, now)
        return record

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> Cancellation | None:
        record = self._visible(task_id, tenant)
        if record is None:
            return None
        if record.state is State.PENDING:
            self._finish(record, State.CANCELLED, now)
            return Cancellation(record, CancelOutcome.CANCELLED)
        if record.state is State.RUNNING:
            if record.cancel_requested:
                return Cancellation(record, CancelOutcome.UNCHANGED)
            record.cancel_requested = True
            record.update_time = now
            record.version += 1
            self._publish(record)
            return Cancellation(record, CancelOutcome.REQUESTED)
        if record.state is State.CANCELLED:
            return Cancellation(record, CancelOutcome.UNCHANGED)
        raise InvalidTransition(
            record,
            f"task {task_id} already finished as {record.state.name}; "
            "only PENDING or RUNNING tasks can be cancelled",
        )

    async def retry(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        record = self._visible(task_id, tenant)
        if record is None:
            return None
        if record.state not in (State.FAILED, State.CANCELLED):
            raise InvalidTransition(
                record,
                f"task {task_id} is {record.state.name}; only FAILED or CANCELLED tasks "
                "can be retried",
            )
        if self._unfinished + 1 > self._max_queue:
            raise QueueFull(self._unfinished, self._max_queue)
        self._tenants.check([record.tenant])
        self._finished_count -= 1
        self._count_unfinished(record, 1)
        record.waiting = 0
        record.attempt = 0
        record.result = None
        record.error = None
        record.progress = None
        record.cancel_requested = False
        record.start_time = None
        record.end_time = None
        self._make_pending(record, now, now)
        return record

    async def purge(self, finished_before: float) -> int:
        purged = 0
        finished = self._finished
        while finished:
            record = finished[0]
            if record.state.is_terminal and record.id in self._tasks:
                end = record.end_time
                if end is not None and end >= finished_before:
                    break
                self._drop(record)
                purged += 1
            finished.popleft()
        return purged

    # -- task logs --------------------------------------------------------

    async def append_logs(self, batches: Sequence[LogBatch]) -> None:
        self.keep_logs(batches)

    def keep_logs(self, batches: Sequence[LogBatch]) -> list[KeptLogs]:
        """Keep the lines of tasks still held; what was kept, for a store
        that writes them through."""
        kept: list[KeptLogs] = []
        for batch in last_entries(batches):
            record = self._tasks.get(batch.task_id)
            if record is not None and batch.entries:
                kept.append(KeptLogs(record.seq, batch, self._logs.append(batch)))
        return kept

    async def read_logs(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        return self._logs.read(task_id, attempt, after, limit)

    # -- reads ----------------------------------------------------------

    async def get(self, task_id: str, tenant: str = "") -> TaskRecord | None:
        return self._visible(task_id, tenant)

    async def list_page(self, query: ListQuery) -> tuple[list[TaskRecord], int | None]:
        page: list[TaskRecord] = []
        for record in self._index.candidates(query, self._tasks):
            if query.states and record.state not in query.states:
                continue
            if query.type and record.type != query.type:
                continue
            if query.tenant != record.tenant:
                continue
            if query.labels:
                labels = record.labels or {}
                if any(labels.get(k) != v for k, v in query.labels):
                    continue
            if not _created_within(record, query):
                continue
            if len(page) == query.page_size:
                return page, page[-1].seq
            page.append(record)
        return page, None

    async def depth(self) -> int:
        return self._unfinished

    def subscribe(self, task_id: str) -> LatestSubscription:
        return self._feed.subscribe(task_id)

    async def follow(self, feed_filter: FeedFilter, cursor: str | None = None) -> FeedReader:
        return await self._feed.follow(feed_filter, cursor)

    async def close(self) -> None:
        self._feed.clear()

    # -- limits, per task type ----------------------------------------------

    async def declare_type_defaults(self, defaults: Mapping[str, TypeLimits], now: float) -> None:
        for task_type in self._book.declare_defaults(defaults, now):
            self._configure(self._book.types[task_type])

    async def update_type(
        self,
        task_type: str,
        now: float,
        *,
        limits: Mapping[str, float] | None = None,
        restore: Collection[str] = (),
        paused: bool | None = None,
    ) -> TypeSettings:
        settings = self._book.update(task_type, now, limits=limits, restore=restore, paused=paused)
        self._configure(settings)
        return settings

    async def type_settings(self) -> dict[str, TypeSettings]:
        return dict(self._book.types)

    async def type_counts(self) -> dict[str, TypeCounts]:
        running = {gate.type: gate.running for gate in self._queue.gates() if gate.running}
        return {
            task_type: TypeCounts(running.get(task_type, 0), count - running.get(task_type, 0))
            for task_type, count in self._unfinished_by_type.items()
        }

    async def backlog(self, now: float) -> list[BacklogGauge]:
        return count_backlog(self._index.in_states((State.PENDING, State.RUNNING)), now)

    async def pending_reason(self, record: TaskRecord, now: float) -> PendingExplanation:
        return self._queue.gate(record.type).explain(record, now)

    def _configure(self, settings: TypeSettings) -> None:
        """Apply a type's settings to its claims; a change may free tasks
        held back, so the listener hears of work."""
        self._queue.configure(settings.type, settings.limits, settings.paused)
        if not settings.paused:
            self._wake()

    # -- schedules --------------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        self._book.create_schedule(schedule)

    async def get_schedule(self, tenant: str, schedule_id: str) -> ScheduleRecord | None:
        return self._book.schedules.get((tenant, schedule_id))

    async def list_schedules(self, tenant: str | None = None) -> list[ScheduleRecord]:
        return self._book.list_schedules(tenant)

    async def replace_schedule(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        return self._book.replace_schedule(schedule, read_update_time)

    async def advance_schedule(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        self._book.advance_schedule(tenant, schedule_id, fired_until)

    async def delete_schedule(self, tenant: str, schedule_id: str) -> bool:
        return self._book.delete_schedule(tenant, schedule_id)

    @property
    def size(self) -> int:
        """Tasks held, finished ones included."""
        return len(self._tasks)

    # -- seeding --------------------------------------------------------------

    def load(
        self,
        records: Iterable[TaskRecord],
        now: float,
        last_seq: int = 0,
        saved: Iterable[TypeSettings | ScheduleRecord] = (),
    ) -> Loaded:
        """Take in saved records, type settings and schedules as they are,
        publishing nothing: for an empty store, before any other call.

        Pending tasks are queued again (priority, then creation order, the
        delayed ones by their time); a task waiting for dependencies waits
        again for those unfinished, and is cancelled if one failed (a
        change, returned); new tasks are numbered after `last_seq` and every
        loaded seq.
        """
        self._book.load(saved)
        for settings in self._book.types.values():
            self._queue.configure(settings.type, settings.limits, settings.paused)
        finished: list[TaskRecord] = []
        changed: list[TaskRecord] = []
        # By creation: a task's dependencies are older than it, so they are
        # in (and settled) by the time it is loaded.
        for record in sorted(records, key=lambda r: r.seq):
            if record.state is State.PENDING and record.waiting and self._wait_again(record, now):
                changed.append(record)
            self._register(record)
            self._seq = max(self._seq, record.seq)
            if record.state.is_terminal:
                finished.append(record)
                continue
            self._count_unfinished(record, 1)
            if record.state is State.RUNNING:
                self._running[record.id] = record
                self._queue.started(record)
            elif not record.waiting:
                self._queue.push(record, now)
        self._seq = max(self._seq, last_seq)
        finished.sort(key=lambda r: (r.end_time or 0.0, r.seq))
        self._finished.extend(finished)
        self._finished_count += len(finished)
        dropped: list[TaskRecord] = []
        while self._finished_count > self._retention_count and self._finished:
            oldest = self._finished.popleft()
            self._drop(oldest, tell=False)
            dropped.append(oldest)
        return Loaded(dropped, changed)

    def _wait_again(self, record: TaskRecord, now: float) -> bool:
        """Wait again for the dependencies of a loaded task still unfinished
        (those dropped since have ended, and counted); returns True when one
        failed, and the task is cancelled."""
        dependencies = [d for i in record.depends_on or () if (d := self._tasks.get(i))]
        failure = wait_for(self._dependents, record, dependencies)
        if failure is None:
            return False
        record.state = State.CANCELLED
        record.error = failure
        record.end_time = record.update_time = now
        record.version += 1
        return True

    # -- internals ------------------------------------------------------

    def _visible(self, task_id: str, tenant: str) -> TaskRecord | None:
        record = self._tasks.get(task_id)
        if record is None or record.tenant != tenant:
            return None
        return record

    def _set_state(self, record: TaskRecord, state: State) -> None:
        """Every change of a task's state goes here, so that the running
        counts that limits are checked against follow every path."""
        was = record.state
        self._index.move(record, state)
        record.state = state
        if state is State.RUNNING:
            self._running[record.id] = record
        elif was is State.RUNNING:
            del self._running[record.id]
            if self._queue.stopped(record):
                self._wake()

    def _make_pending(self, record: TaskRecord, scheduled_time: float, now: float) -> None:
        """Back to the queue, due at `scheduled_time`: a retry after backoff,
        a hand-back at shutdown, a RetryTask."""
        self._set_state(record, State.PENDING)
        record.scheduled_time = scheduled_time
        record.update_time = now
        record.version += 1
        self._queue.push(record, now)
        self._publish(record)

    def _finish(self, record: TaskRecord, state: State, now: float) -> None:
        """End a task, and settle the tasks waiting for it, and theirs in
        turn (a worklist: a chain may be long)."""
        self._end(record, state, now)
        if not self._dependents:
            return
        ended = [record]
        while ended:
            dependency = ended.pop()
            for dependent in take_waiting(self._dependents, dependency):
                failure = dependency_failure(dependency, dependent.run_on_dependency_failure)
                if failure is not None:
                    dependent.error = failure
                    self._end(dependent, State.CANCELLED, now)
                    ended.append(dependent)
                    continue
                dependent.waiting -= 1
                if not dependent.waiting:
                    dependent.update_time = now
                    dependent.version += 1
                    self._queue.push(dependent, now)
                    self._publish(dependent)

    def _end(self, record: TaskRecord, state: State, now: float) -> None:
        self._set_state(record, state)
        record.end_time = now
        record.update_time = now
        record.version += 1
        self._count_unfinished(record, -1)
        self._publish(record)
        self._retire(record)

    def _retire(self, record: TaskRecord) -> None:
        """Count a record that just finished; drop the oldest finished ones
        beyond retention_count."""
        self._finished_count += 1
        self._finished.append(record)
        while self._finished_count > self._retention_count and self._finished:
            oldest = self._finished.popleft()
            if oldest.state.is_terminal and self._tasks.get(oldest.id) is oldest:
                self._drop(oldest)

    def _count_unfinished(self, record: TaskRecord, delta: int) -> None:
        self._unfinished += delta
        if self._tenants.quota is not None:
            self._tenants.count(record.tenant, delta)
        by_type = self._unfinished_by_type
        count = by_type.get(record.type, 0) + delta
        if count:
            by_type[record.type] = count
        else:
            del by_type[record.type]

    def _drop(self, record: TaskRecord, *, tell: bool = True) -> None:
        del self._tasks[record.id]
        self._logs.drop(record.id)
        self._finished_count -= 1
        if record.idempotency_key is not None:
            key = (record.tenant, record.idempotency_key)
            if self._keys.get(key) is record:
                del self._keys[key]
        if tell and self._drop_hook is not None:
            self._drop_hook(record)
        self._index.drop(record, self._tasks)

    def _wake(self) -> None:
        """Tell the listener of work that a limit stopped holding back."""
        if self._listener is not None:
            self._listener.work_available()

    def _tell(self, record: TaskRecord) -> None:
        """Publish a change: to the feed, and to the listener what it means
        for the runner. The feed gets the live record, not a copy: each
        later change publishes it again at a later position, where readers
        (and a resume from the ring) take it, so the state read is always
        the one of the position it is read at."""
        self._position += 1
        self._feed.publish((self._position,), record)
        announce(self._listener, record)


def _created_within(record: TaskRecord, query: ListQuery) -> bool:
    after, before = query.created_after, query.created_before
    return (after is None or record.create_time >= after) and (
        before is None or record.create_time < before
    )
