"""`memory://`: the default store. Fast, bounded, and lost on restart."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence

from conveyor_server._ids import new_task_id
from conveyor_server.stores._book import LocalBook, Saved
from conveyor_server.stores._errors import IdempotencyConflict, InvalidTransition, QueueFull
from conveyor_server.stores._feed import ChangeFeed, FeedFilter, FeedReader
from conveyor_server.stores._index import ListIndex
from conveyor_server.stores._protocol import StoreListener, announce
from conveyor_server.stores._queue import DueQueue
from conveyor_server.stores._quota import TenantDepths
from conveyor_server.stores._records import (
    Cancellation,
    CancelOutcome,
    ListQuery,
    NewTask,
    Outcome,
    Progress,
    ScheduleRecord,
    State,
    TaskRecord,
)
from conveyor_server.stores._subscriptions import LatestSubscription
from conveyor_server.stores._workers import LocalWorkers, WorkerInfo

_DONE = Progress(100.0)


def _done_progress(progress: Progress | None) -> Progress:
    if progress is None or progress.percent == 100.0:
        return progress or _DONE
    return Progress(100.0, progress.message, progress.current, progress.total)


class MemoryStore:
    """In-process store: dicts and heaps, no I/O.

    All mutation happens on the event loop thread, so every method is atomic
    without locks.

    By default the store hands each change to its change feed and tells
    its listener of due work and cancel requests. A store that keeps its
    index here (`SqliteStore`) passes `publish`, which then gets every
    change instead, in the order made, and `drop`, which gets every
    finished record dropped (retention or purge).
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
        self._keys: dict[tuple[str, str], TaskRecord] = {}
        self._feed = ChangeFeed()
        self._position = 0
        self._seq = 0
        self._listener: StoreListener | None = None
        self._signing_key = os.urandom(32)
        self._publish = self._tell if publish is None else publish
        self._drop_hook = drop
        self._book = LocalBook(save)

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
        # whole or not at all. `plan` holds, per request, the task it repeats
        # (a record, or the index of an earlier request in this batch), or
        # None for a new task.
        plan: list[TaskRecord | int | None] = []
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
        fresh = plan.count(None)
        if fresh and self._unfinished + fresh > self._max_queue:
            raise QueueFull(self._unfinished, self._max_queue)
        if fresh and self._tenants.quota is not None:
            self._tenants.check(
                new.tenant for new, repeats in zip(tasks, plan, strict=True) if repeats is None
            )

        records: list[TaskRecord] = []
        for new, repeats in zip(tasks, plan, strict=True):
            if isinstance(repeats, TaskRecord):
                records.append(repeats)
                continue
            if isinstance(repeats, int):
                records.append(records[repeats])
                continue
            self._seq += 1
            record = new.record(new_task_id(), now, new.scheduled_time(now), self._seq)
            self._tasks[record.id] = record
            self._index.add(record)
            if new.idempotency_key is not None:
                self._keys[(new.tenant, new.idempotency_key)] = record
            self._unfinished += 1
            self._tenants.count(record.tenant, 1)
            self._queue.push(record, now)
            self._publish(record)
            records.append(record)
        return records

    async def claim(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        claimed = self._queue.pop_due(limit, now, types)
        for record in claimed:
            self._index.move(record, State.RUNNING)
            record.state = State.RUNNING
            record.attempt += 1
            record.claim += 1
            record.start_time = now
            record.update_time = now
            record.progress = None
            record.version += 1
            self._running[record.id] = record
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
            del self._running[record.id]
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
        del self._running[task_id]
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
        self._unfinished += 1
        self._tenants.count(record.tenant, 1)
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

    # -- schedules --------------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        self._book.create_schedule(schedule)

    async def get_schedule(self, tenant: str, schedule_id: str) -> ScheduleRecord | None:
        return self._book.schedules.get((tenant, schedule_id))

    async def list_schedules(self, tenant: str | None = None) -> list[ScheduleRecord]:
        return self._book.list_schedules(tenant)

    async def replace_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord | None:
        return self._book.replace_schedule(schedule)

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
        self, records: Iterable[TaskRecord], now: float, last_seq: int = 0
    ) -> list[TaskRecord]:
        """Take in saved records as they are, publishing nothing: for an
        empty store, before any other call.

        Pending tasks are queued again (priority, then creation order, the
        delayed ones by their time); new tasks are numbered after `last_seq`
        and every loaded seq. Returns the finished records dropped to keep
        within retention_count (not passed to `drop`).
        """
        finished: list[TaskRecord] = []
        for record in sorted(records, key=lambda r: r.seq):
            self._tasks[record.id] = record
            self._index.add(record)
            if record.idempotency_key is not None:
                self._keys[(record.tenant, record.idempotency_key)] = record
            self._seq = max(self._seq, record.seq)
            if record.state.is_terminal:
                finished.append(record)
                continue
            self._unfinished += 1
            self._tenants.count(record.tenant, 1)
            if record.state is State.RUNNING:
                self._running[record.id] = record
            else:
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
        return dropped

    # -- internals ------------------------------------------------------

    def _visible(self, task_id: str, tenant: str) -> TaskRecord | None:
        record = self._tasks.get(task_id)
        if record is None or record.tenant != tenant:
            return None
        return record

    def _make_pending(self, record: TaskRecord, scheduled_time: float, now: float) -> None:
        """Back to the queue, due at `scheduled_time`: a retry after backoff,
        a hand-back at shutdown, a RetryTask."""
        self._index.move(record, State.PENDING)
        record.state = State.PENDING
        record.scheduled_time = scheduled_time
        record.update_time = now
        record.version += 1
        self._queue.push(record, now)
        self._publish(record)

    def _finish(self, record: TaskRecord, state: State, now: float) -> None:
        self._index.move(record, state)
        record.state = state
        record.end_time = now
        record.update_time = now
        record.version += 1
        self._running.pop(record.id, None)
        self._unfinished -= 1
        self._tenants.count(record.tenant, -1)
        self._finished_count += 1
        self._finished.append(record)
        self._publish(record)
        while self._finished_count > self._retention_count and self._finished:
            oldest = self._finished.popleft()
            if oldest.state.is_terminal and self._tasks.get(oldest.id) is oldest:
                self._drop(oldest)

    def _drop(self, record: TaskRecord, *, tell: bool = True) -> None:
        del self._tasks[record.id]
        self._finished_count -= 1
        if record.idempotency_key is not None:
            key = (record.tenant, record.idempotency_key)
            if self._keys.get(key) is record:
                del self._keys[key]
        if tell and self._drop_hook is not None:
            self._drop_hook(record)
        self._index.drop(record, self._tasks)

    def _tell(self, record: TaskRecord) -> None:
        """Publish a change: to the feed, and to the listener what it means
        for the runner. The feed gets the live record, not a copy: each
        later change publishes it again at a later position, where readers
        (and a resume from the ring) take it, so the state read is always
        the one of the position it is read at."""
        self._position += 1
        self._feed.publish((self._position,), record)
        announce(self._listener, record)
