"""`sqlite:///path`: one node, durable.

A `MemoryStore` is the index: reads, queueing and subscriptions stay in
memory. Every change it makes is written through to one SQLite database: a
row per task, the whole row on every change.

Writes: each change snapshots the whole record on the event loop; the
changes of one loop iteration form a batch. One writer thread owns the
connection: it takes every batch queued so far, writes them in one
transaction (group commit, WAL journal) and reports back to the loop, which
then resolves the waiting calls and hands the changes to its feed. So the
loop never waits for SQLite, and

- `create` returns only once its tasks are committed, as do `cancel` and
  `retry`, whose answers a client sees;
- watchers, `get` and `list_page` only ever see committed states: a read of
  a task with a write in flight waits for that write;
- the runner's calls (`claim`, `set_progress`, `complete`, `requeue`) do
  not wait: a state they make is seen only once committed, and one lost in
  a crash was seen by nobody.

A write that fails (disk full, I/O error) rolls back its transaction and
fails the store: the index now holds changes the disk does not, so every
later call raises StoreUnavailable until a restart reloads the database.

Start-up, in the constructor, before anything is served, loads every row.
A task found RUNNING was interrupted by a crash (a graceful stop hands
running tasks back first); as with the Redis reaper, its attempt counts:
with attempts left it is queued again, due now, else it ends FAILED, both
with the error INTERRUPTED; one with a cancel request ends CANCELLED. A
task waiting for dependencies waits again for those unfinished; one whose
dependency ended FAILED or CANCELLED (an interrupted last attempt) is
cancelled as it would have been. The changed rows are written back before
the store is used. Type settings and schedules are loaded too, and every
change of them is committed, as a task's is, before the call that made it
answers.

The tables, of schema version 7, are described in `schema.py`; files of
versions 1 to 6 are migrated when opened. Task logs are kept in the index
as well, and written through like a task's changes, without waiting.

The database is opened in exclusive locking mode: a second server on the
same file is refused at start-up instead of silently diverging (and no
other program can read the file while the server runs: copy it, or stop
the server).
`synchronous=full` (the default) syncs the WAL at every commit, so an
acknowledged task survives a power loss; `normal` survives a crash of the
process but not of the machine, for higher throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import TypeVar

from conveyor_server.stores._book import Saved
from conveyor_server.stores._errors import InvalidTransition, StoreUnavailable
from conveyor_server.stores._feed import ChangeFeed, FeedFilter, FeedReader
from conveyor_server.stores._logs import KeptLogs, LogBatch, LogCursor, LogPage
from conveyor_server.stores._protocol import StoreListener, announce
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
from conveyor_server.stores._subscriptions import LatestSubscription
from conveyor_server.stores._workers import WorkerInfo
from conveyor_server.stores.memory import MemoryStore
from conveyor_server.stores.sqlite import logs, schema, settings
from conveyor_server.stores.sqlite.database import (
    connect,
    load_database,
    open_error,
    set_meta,
    signing_key,
    transaction,
)

logger = logging.getLogger(__name__)

_Answer = TypeVar("_Answer")

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


class _Batch:
    """The changes of one loop iteration, committed together."""

    __slots__ = ("deletes", "done", "error", "logs", "number", "saved", "upserts", "waiters")

    def __init__(self, number: int) -> None:
        self.number = number
        # Latest snapshot per task id; a task changed twice in a batch is
        # written once.
        self.upserts: dict[str, schema.Snapshot] = {}
        # Ids of dropped tasks, deleted after the upserts.
        self.deletes: list[int] = []  # seqs
        # Latest change per type setting or schedule.
        self.saved: dict[settings.RowKey, Saved] = {}
        # Task log lines, written before the deletes.
        self.logs: list[KeptLogs] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.done = False
        self.error: StoreUnavailable | None = None


class SqliteStore:
    """Durable store of one process: a MemoryStore written through to SQLite.

    >>> store = SqliteStore("tasks.db", max_queue=100_000, retention_count=100_000)
    >>> ...
    >>> await store.close()
    """

    def __init__(
        self,
        path: str,
        *,
        max_queue: int,
        retention_count: int,
        synchronous: str = "full",
        max_queue_per_tenant: int | None = None,
    ) -> None:
        mode = _SYNCHRONOUS.get(synchronous.lower())
        if mode is None:
            raise ValueError(
                f"synchronous must be 'full' or 'normal', got {synchronous!r} "
                "(full: every acknowledged task survives a power loss; "
                "normal: it survives a crash of the server only)"
            )
        self.path = path
        # The index publishes its changes to us; we hand them to the feed
        # and the listener once committed.
        self._memory = MemoryStore(
            max_queue=max_queue,
            retention_count=retention_count,
            max_queue_per_tenant=max_queue_per_tenant,
            publish=self._changed,
            drop=self._dropped,
            save=self._saved,
        )
        self._feed = ChangeFeed()
        self._position = 0
        self._listener: StoreListener | None = None
        self._connection = connect(path, mode)
        try:
            self._saved_seq = load_database(self._connection, self._memory, path, time.time())
            self._signing_key = signing_key(self._connection)
        except sqlite3.Error as exc:
            self._connection.close()
            raise open_error(path, exc) from exc
        except BaseException:
            self._connection.close()
            raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: _Batch | None = None
        self._batches = 0
        # Tasks with a write not yet committed: the batch that holds the
        # latest one, and its snapshot (the task's current state).
        self._inflight: dict[str, tuple[_Batch, schema.Snapshot]] = {}
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._failure: StoreUnavailable | None = None
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name="conveyor-sqlite-writer", daemon=True
        )
        self._writer.start()

    # -- one process: every change is seen here ---------------------------

    @property
    def shared(self) -> bool:
        return False

    async def signing_key(self) -> bytes:
        return self._signing_key

    def attach(self, listener: StoreListener) -> None:
        self._listener = listener
        # The index tells it of work that a limit stopped holding back.
        self._memory.attach(listener)

    # -- writes the client sees: answered once committed -----------------

    async def create(self, tasks: Sequence[NewTask], now: float) -> list[TaskRecord]:
        self._check()
        records = await self._memory.create(tasks, now)
        return await self._committed(records)

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> Cancellation | None:
        self._check()
        cancellation = await self._answered(self._memory.cancel(task_id, now, tenant))
        if cancellation is None:
            return None
        [record] = await self._committed([cancellation.record])
        return Cancellation(record, cancellation.outcome)

    async def retry(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        self._check()
        record = await self._answered(self._memory.retry(task_id, now, tenant))
        if record is None:
            return None
        [record] = await self._committed([record])
        return record

    async def _answered(self, change: Awaitable[_Answer]) -> _Answer:
        """The answer of a change of one task. A change refused with
        InvalidTransition names a state that must be on disk too before the
        refusal is answered."""
        try:
            return await change
        except InvalidTransition as exc:
            await self._committed([exc.record])
            raise

    # -- the runner's writes: seen by others once committed --------------

    async def claim(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        self._check()
        return await self._memory.claim(limit, now, types)

    async def set_progress(self, updates: Sequence[tuple[str, int, Progress]], now: float) -> None:
        self._check()
        await self._memory.set_progress(updates, now)

    async def complete(self, outcomes: Sequence[Outcome], now: float) -> list[TaskRecord]:
        self._check()
        return await self._memory.complete(outcomes, now)

    async def settle(
        self, outcomes: Sequence[Outcome], limit: int, now: float, types: Collection[str]
    ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        self._check()
        return await self._memory.settle(outcomes, limit, now, types)

    async def requeue(self, task_id: str, claim: int, now: float) -> TaskRecord | None:
        self._check()
        return await self._memory.requeue(task_id, claim, now)

    async def purge(self, finished_before: float) -> int:
        self._check()
        return await self._memory.purge(finished_before)

    async def append_logs(self, batches: Sequence[LogBatch]) -> None:
        self._check()
        kept = self._memory.keep_logs(batches)
        if kept:
            (self._open or self._new_batch()).logs.extend(kept)

    async def read_logs(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        self._check()
        return await self._memory.read_logs(task_id, attempt, after, limit)

    # -- reads ----------------------------------------------------------

    async def get(self, task_id: str, tenant: str = "") -> TaskRecord | None:
        self._check()
        record = await self._memory.get(task_id, tenant)
        if record is None or record.id not in self._inflight:
            return record
        [record] = await self._committed([record])
        return record

    async def list_page(self, query: ListQuery) -> tuple[list[TaskRecord], int | None]:
        self._check()
        records, cursor = await self._memory.list_page(query)
        return await self._committed(records), cursor

    async def next_due_time(self) -> float | None:
        self._check()
        return await self._memory.next_due_time()

    async def depth(self) -> int:
        self._check()
        return await self._memory.depth()

    # Workers of one process are not written down: at start-up only this
    # process's runner registers again.
    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._memory.register_worker(worker)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._memory.unregister_worker(worker_id)

    async def live_workers(self, now: float) -> list[WorkerInfo]:
        return await self._memory.live_workers(now)

    def subscribe(self, task_id: str) -> LatestSubscription:
        return self._feed.subscribe(task_id)

    async def follow(self, feed_filter: FeedFilter, cursor: str | None = None) -> FeedReader:
        return await self._feed.follow(feed_filter, cursor)

    @property
    def size(self) -> int:
        """Tasks held, finished ones included."""
        return self._memory.size

    # -- limits, per task type: changes answered once committed ------------

    async def declare_type_defaults(self, defaults: Mapping[str, TypeLimits], now: float) -> None:
        self._check()
        await self._memory.declare_type_defaults(defaults, now)
        await self._flushed()

    async def update_type(
        self,
        task_type: str,
        now: float,
        *,
        limits: Mapping[str, float] | None = None,
        restore: Collection[str] = (),
        paused: bool | None = None,
    ) -> TypeSettings:
        self._check()
        changed = await self._memory.update_type(
            task_type, now, limits=limits, restore=restore, paused=paused
        )
        await self._flushed()
        return changed

    async def type_settings(self) -> dict[str, TypeSettings]:
        self._check()
        return await self._memory.type_settings()

    async def type_counts(self) -> dict[str, TypeCounts]:
        self._check()
        return await self._memory.type_counts()

    async def backlog(self, now: float) -> list[BacklogGauge]:
        self._check()
        return await self._memory.backlog(now)

    async def pending_reason(self, record: TaskRecord, now: float) -> PendingExplanation:
        self._check()
        return await self._memory.pending_reason(record, now)

    # -- schedules: changes answered once committed ------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        self._check()
        await self._memory.create_schedule(schedule)
        await self._flushed()

    async def get_schedule(self, tenant: str, schedule_id: str) -> ScheduleRecord | None:
        self._check()
        return await self._memory.get_schedule(tenant, schedule_id)

    async def list_schedules(self, tenant: str | None = None) -> list[ScheduleRecord]:
        self._check()
        return await self._memory.list_schedules(tenant)

    async def replace_schedule(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        self._check()
        stored = await self._memory.replace_schedule(schedule, read_update_time)
        await self._flushed()
        return stored

    async def advance_schedule(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        self._check()
        await self._memory.advance_schedule(tenant, schedule_id, fired_until)
        await self._flushed()

    async def delete_schedule(self, tenant: str, schedule_id: str) -> bool:
        self._check()
        deleted = await self._memory.delete_schedule(tenant, schedule_id)
        await self._flushed()
        return deleted

    async def close(self) -> None:
        """Commit every pending write, stop the writer, close the database."""
        if self._closed:
            return
        self._closed = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._seal()
        self._queue.put(None)
        await asyncio.to_thread(self._writer.join)
        await self._memory.close()
        self._feed.clear()

    # -- the index publishes its changes here ------------------------------

    def _changed(self, record: TaskRecord) -> None:
        batch = self._open or self._new_batch()
        values = schema.snapshot(record)
        batch.upserts[record.id] = values
        self._inflight[record.id] = (batch, values)

    def _dropped(self, record: TaskRecord) -> None:
        batch = self._open or self._new_batch()
        batch.deletes.append(record.seq)

    def _saved(self, item: Saved) -> None:
        batch = self._open or self._new_batch()
        batch.saved[settings.row_key(item)] = item

    # -- committing, on the loop ------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise StoreUnavailable(str(self._failure))
        if self._closed:
            raise StoreUnavailable(f"the task store {self.path} is closed")

    def _new_batch(self) -> _Batch:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._batches += 1
        batch = self._open = _Batch(self._batches)
        # Everything changed until the loop next looks at its queue joins
        # this batch.
        self._loop.call_soon(self._seal)
        return batch

    def _seal(self) -> None:
        batch, self._open = self._open, None
        if batch is not None:
            self._queue.put(batch)

    async def _committed(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The records as committed: waits for the writes in flight of any
        of them, and answers their state as of this call."""
        inflight = self._inflight
        last: _Batch | None = None
        for record in records:
            entry = inflight.get(record.id)
            if entry is not None and (last is None or entry[0].number > last.number):
                last = entry[0]
        if last is None:
            return records
        states = [
            entry[1] if (entry := inflight.get(r.id)) is not None else schema.snapshot(r)
            for r in records
        ]
        # Batches commit in order: once the latest is in, so are the others.
        await self._wait(last)
        return [
            r if r.version == values[schema.VERSION] else schema.record_from_snapshot(values)
            for r, values in zip(records, states, strict=True)
        ]

    async def _flushed(self) -> None:
        """Wait for the commit of the changes made so far in this loop
        iteration (a change just made is in the open batch)."""
        if self._open is not None:
            await self._wait(self._open)

    async def _wait(self, batch: _Batch) -> None:
        if not batch.done:
            assert self._loop is not None
            waiter = self._loop.create_future()
            batch.waiters.append(waiter)
            await waiter
        elif batch.error is not None:
            raise StoreUnavailable(str(batch.error))

    def _on_committed(self, group: list[_Batch], error: StoreUnavailable | None) -> None:
        if error is not None and self._failure is None:
            self._failure = error
        inflight = self._inflight
        feed = self._feed
        listener = self._listener
        for batch in group:
            batch.done = True
            batch.error = error
            if error is None:
                for task_id, values in batch.upserts.items():
                    entry = inflight.get(task_id)
                    if entry is not None and entry[0] is batch:
                        del inflight[task_id]
                    # A task changed twice in one batch was written, and is
                    # published, once, in its latest state.
                    record = schema.record_from_snapshot(values)
                    self._position += 1
                    feed.publish((self._position,), record)
                    if listener is not None and _announces(values):
                        announce(listener, record)
            for waiter in batch.waiters:
                if waiter.done():
                    continue  # its caller was cancelled
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(StoreUnavailable(str(error)))

    # -- the writer thread ----------------------------------------------

    def _write_loop(self) -> None:
        connection = self._connection
        failure: StoreUnavailable | None = None
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    group.append(more)
                if failure is None:
                    failure = self._write(group)
                assert self._loop is not None
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self._loop.call_soon_threadsafe(self._on_committed, group, failure)
        finally:
            connection.close()

    def _write(self, group: list[_Batch]) -> StoreUnavailable | None:
        """Commit the batches in one transaction; the error, if it failed."""
        connection = self._connection
        try:
            upserts: dict[str, schema.Snapshot] = {}
            deletes: list[int] = []
            saved: dict[settings.RowKey, Saved] = {}
            kept_logs: list[KeptLogs] = []
            for batch in group:
                upserts.update(batch.upserts)
                deletes.extend(batch.deletes)
                saved.update(batch.saved)
                kept_logs.extend(batch.logs)
            rows = [schema.row_from_snapshot(values) for values in upserts.values()]
            top = max((schema.seq_of(values) for values in upserts.values()), default=0)
            with transaction(connection):
                schema.write_rows(connection, rows)
                logs.write(connection, kept_logs)
                schema.delete_rows(connection, deletes)
                logs.delete_tasks(connection, deletes)
                settings.write(connection, saved.values())
                if top > self._saved_seq:
                    set_meta(connection, "last_seq", str(top))
            self._saved_seq = max(self._saved_seq, top)
        except Exception as exc:
            logger.exception(
                "could not write to the task database %s; the store refuses every call "
                "until a restart",
                self.path,
            )
            return StoreUnavailable(f"could not write to the task database {self.path}: {exc}")
        return None


_STATE = TaskRecord.__slots__.index("state")
_CANCEL_REQUESTED = TaskRecord.__slots__.index("cancel_requested")
_WAITING = TaskRecord.__slots__.index("waiting")


def _announces(values: schema.Snapshot) -> bool:
    """Whether a committed change has news for the listener (see
    `announce`): most changes (claims, progress, ends) have none."""
    state = values[_STATE]
    if state is State.PENDING:
        return not values[_WAITING]
    return state is State.RUNNING and bool(values[_CANCEL_REQUESTED])
