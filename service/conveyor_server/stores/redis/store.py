"""`redis://host:port/db?prefix=name`: one store shared by several processes.

Server replicas and worker-only processes open the same URL and prefix.
Each state change is one Lua script (see `scripts`); changes reach other
processes on the change feed stream (task versions, for watchers) and on
pub/sub channels: cancel requests for runners, and word of new work. Times are the `now` values callers pass,
never Redis's clock, so every process agrees with its own runner.

The store keeps the claims of its own process alive: once attached to a
runner it renews the leases of the attempts it claimed, reaps the lapsed
leases of dead processes, and looks for work now and then in case a word of
new work was lost. It tells its listener everything a runner must act on:
due work, cancel requests and attempts lost to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from conveyor_server._ids import new_task_id
from conveyor_server.stores._errors import (
    IdempotencyConflict,
    InvalidTransition,
    QueueFull,
    StoreUnavailable,
    UnknownDependency,
)
from conveyor_server.stores._feed import FeedFilter, FeedReader
from conveyor_server.stores._logs import LogBatch, LogCursor, LogPage
from conveyor_server.stores._protocol import StoreListener, announce
from conveyor_server.stores._reasons import LimitFigures, explain
from conveyor_server.stores._records import (
    LIMIT_NAMES,
    BacklogGauge,
    Cancellation,
    CancelOutcome,
    ListQuery,
    NewTask,
    Outcome,
    PendingExplanation,
    Progress,
    ScheduleRecord,
    TaskRecord,
    TypeCounts,
    TypeLimits,
    TypeSettings,
)
from conveyor_server.stores._subscriptions import LatestSubscription
from conveyor_server.stores._workers import WorkerInfo
from conveyor_server.stores.redis import scripts as lua
from conveyor_server.stores.redis._connection import DOWN, connect
from conveyor_server.stores.redis._feed_stream import FeedStream
from conveyor_server.stores.redis._follower import ChangeFollower
from conveyor_server.stores.redis._group_commit import GroupCommit
from conveyor_server.stores.redis._leases import LeaseKeeper, LeaseReport
from conveyor_server.stores.redis._list_index import ListIndexBuild
from conveyor_server.stores.redis._schedules import ScheduleBook
from conveyor_server.stores.redis._task_logs import RedisLogs
from conveyor_server.stores.redis._workers import WorkerRegistry
from conveyor_server.stores.redis.scripts import existing_record, pack, progress_values

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 2.0
# How many tenants (and key groups of a tenant, and late delayed tasks) one
# read of the backlog gauges looks at, so that it holds Redis briefly.
BACKLOG_MAX_TENANTS = 1000
# How long the earliest due time a claim read stands in for next_due_time.
DUE_HINT_SECONDS = 0.05

# One create call as the script takes it: now, lengths, values.
_CreateBatch = tuple[float, bytes, bytes]


class RedisStore:
    """Tasks in one Redis, shared by every server replica and worker process
    that opens the same URL and prefix.

    Query options of the URL: `prefix` (default "conveyor") namespaces every
    key and channel; `lease_margin` (seconds, default 2) is how long past
    its expiry a lease is still honoured, for clocks that disagree. Other
    options go to the Redis client.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int,
        retention_count: int,
        lease_seconds: float,
        max_queue_per_tenant: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        connection = connect(url)
        prefix = connection.prefix
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._max_queue = max_queue
        self._max_per_tenant = max_queue_per_tenant
        self._retention_count = retention_count
        self._lease_seconds = float(lease_seconds)
        self._lease_margin = connection.lease_margin
        self._prefix = prefix
        self._where = connection.where
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._calls = itertools.count(1)
        self._redis = connection.redis

        def script(body: str) -> AsyncScript:
            return self._redis.register_script(lua.COMMON + body)

        self._create = script(lua.CREATE)
        self._claim = script(lua.CLAIM)
        self._set_progress = script(lua.SET_PROGRESS)
        self._complete = script(lua.COMPLETE)
        self._settle = script(lua.SETTLE)
        self._requeue = script(lua.REQUEUE)
        self._cancel = script(lua.CANCEL)
        self._retry = script(lua.RETRY)
        self._renew = script(lua.RENEW)
        self._reap = script(lua.REAP)
        self._purge = script(lua.PURGE)
        self._depth = script(lua.DEPTH)
        self._backlog = script(lua.BACKLOG)
        self._work_due = script(lua.WORK)
        self._reason = script(lua.REASON)
        self._declare = script(lua.DECLARE)
        self._update_type = script(lua.UPDATE_TYPE)
        self._list = script(lua.LIST)
        self._fetch = script(lua.FETCH)
        self._list_index = ListIndexBuild(self._redis, prefix, self._owner, script(lua.INDEX))
        self._workers = WorkerRegistry(self._redis, prefix, script(lua.WORKERS), self._unavailable)
        self._shared_secret = script(lua.SIGNING_KEY)
        schedules = script(lua.SCHEDULES)
        self._schedules = ScheduleBook(lambda args: self._run(schedules, [prefix, *args]))
        self._signing_key: bytes | None = None
        append_logs, read_logs = script(lua.APPEND_LOGS), script(lua.READ_LOGS)
        self._logs = RedisLogs(
            lambda args: self._run(append_logs, [prefix, *args]),
            lambda args: self._run(read_logs, [prefix, *args]),
        )

        self._creates = GroupCommit(self._send_creates)
        self._gets = GroupCommit(self._send_gets)

        self._listener: StoreListener | None = None
        self._stream = FeedStream(
            self._redis,
            connection.pubsub_redis,
            prefix=prefix,
            where=self._where,
            fetch=self._fetch,
        )
        self._subscriptions = self._stream.feed.subscriptions
        self._cancels_told: set[str] = set()
        self._pubsub_redis = connection.pubsub_redis
        self._follower = ChangeFollower(
            connection.pubsub_redis,
            prefix=prefix,
            where=connection.where,
            owner=self._owner.encode(),
            cancels_told=self._cancels_told,
        )
        self._clock = clock
        self._leases = LeaseKeeper(self, clock)
        self._due_hint: tuple[float, bytes | None] | None = None
        # The task types this process's runner claims, from its last claim.
        self._claims_types: tuple[str, ...] = ()
        self._closed = False

    # -- leases and notifications ----------------------------------------

    @property
    def shared(self) -> bool:
        return True

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    @property
    def where(self) -> str:
        """Which Redis, for messages."""
        return self._where

    async def signing_key(self) -> bytes:
        if self._signing_key is None:
            self._signing_key = await self._run(self._shared_secret, [self._prefix, os.urandom(32)])
        return self._signing_key

    def attach(self, listener: StoreListener) -> None:
        self._listener = self._follower.listener = listener
        self._follower.start()
        if not self._closed:
            self._leases.start(listener)
            self._list_index.start()

    async def work_is_due(self) -> bool:
        """Whether a task is claimable now: how a word of new work that was
        lost (pub/sub down, a message dropped), or a token that arrived in
        the bucket of a type another process emptied, is made up for."""
        due: int = await self._run(
            self._work_due, [self._prefix, self._clock(), *self._claims_types]
        )
        return bool(due)

    async def renew(self, leases: Sequence[tuple[str, int]], now: float) -> LeaseReport:
        if not leases:
            return LeaseReport()
        args: list[Any] = [self._prefix, now, self._lease_seconds]
        for task_id, claim in leases:
            args += (task_id, claim)
        lost, cancel = await self._run(self._renew, args)
        return LeaseReport(
            lost=[i.decode() for i in lost], cancel_requested=[i.decode() for i in cancel]
        )

    async def reap(self, now: float) -> int:
        handled: int = await self._run(
            self._reap, [self._prefix, now, self._lease_margin, self._retention_count, self._owner]
        )
        return handled

    # -- writes -------------------------------------------------------------

    async def create(self, tasks: Sequence[NewTask], now: float) -> list[TaskRecord]:
        if not tasks:
            return []
        values: list[bytes] = []
        ids: list[str] = []
        scheduled: list[float] = []
        for new in tasks:
            task_id = new_task_id()
            due = new.scheduled_time(now)
            ids.append(task_id)
            scheduled.append(due)
            values += lua.create_values(new, task_id, due, now)
        reply = await self._creates((now, *pack(values)))
        status = reply[0]
        if status == b"conflict":
            earlier = reply[2].decode()
            raise IdempotencyConflict(reply[1].decode(), earlier or None)
        if status == b"unknown":
            raise UnknownDependency(int(reply[1]), int(reply[2]), reply[3].decode())
        self._raise_if_full(reply)
        records: list[TaskRecord] = []
        for new, task_id, due, item in zip(tasks, ids, scheduled, reply[1], strict=True):
            if isinstance(item, list):
                records.append(existing_record(item))
            elif item < 0:
                records.append(records[-item - 1])
            else:
                records.append(new.record(task_id, now, due, item))
        # Other processes hear of new work on the work channel; this one's
        # runner is told here (and its echo is ignored).
        listener = self._listener
        if listener is not None:
            for record in records:
                announce(listener, record)
        return records

    async def claim(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        self._claims_types = tuple(types)
        claimed, earliest = await self._run(
            self._claim,
            [self._prefix, now, max(0, limit), self._lease_seconds, self._owner, *types],
            once=True,
        )
        return self._claimed(claimed, earliest)

    async def settle(
        self, outcomes: Sequence[Outcome], limit: int, now: float, types: Collection[str]
    ) -> tuple[list[TaskRecord], list[TaskRecord]]:
        """Complete and claim in one script call: one round trip and one
        script run per runner round, where the two would cost two."""
        self._claims_types = tuple(types)
        values: list[bytes] = []
        for outcome in outcomes:
            values += lua.outcome_values(outcome)
        ended, claimed, earliest = await self._run(
            self._settle,
            [
                *(self._prefix, now, self._retention_count, self._owner, *pack(values)),
                *(max(0, limit), self._lease_seconds, *types),
            ],
            once=True,
        )
        for outcome in outcomes:
            self._leases.release(outcome.task_id, outcome.claim)
        changed = self._changed(existing_record(values) for values in ended)
        return changed, self._claimed(claimed, earliest)

    async def next_due_time(self) -> float | None:
        hint, self._due_hint = self._due_hint, None
        if hint is not None and asyncio.get_running_loop().time() - hint[0] < DUE_HINT_SECONDS:
            return None if hint[1] is None else float(hint[1])
        types = self._claims_types
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrange(f"{self._prefix}:delayed", 0, 0, withscores=True)
                if types:
                    pipe.zmscore(f"{self._prefix}:token_due", list(types))
                earliest, *tokens = await pipe.execute()
        except DOWN as exc:
            raise self._unavailable(exc) from exc
        times = [float(earliest[0][1])] if earliest else []
        # A token time that passed is one a claim of this process did not
        # take (it had no free thread): waking for it again would spin.
        now = self._clock()
        times += [at for at in (tokens[0] if tokens else []) if at is not None and at > now]
        return min(times, default=None)

    async def set_progress(self, updates: Sequence[tuple[str, int, Progress]], now: float) -> None:
        if not updates:
            return
        values: list[bytes] = []
        for task_id, attempt, progress in updates:
            values += (task_id.encode(), str(attempt).encode(), *progress_values(progress))
        await self._run(self._set_progress, [self._prefix, now, *pack(values)])

    async def complete(self, outcomes: Sequence[Outcome], now: float) -> list[TaskRecord]:
        if not outcomes:
            return []
        values: list[bytes] = []
        for outcome in outcomes:
            values += lua.outcome_values(outcome)
        reply = await self._run(
            self._complete,
            [self._prefix, now, self._retention_count, self._owner, *pack(values)],
            once=True,
        )
        for outcome in outcomes:
            self._leases.release(outcome.task_id, outcome.claim)
        return self._changed(existing_record(values) for values in reply)

    async def requeue(self, task_id: str, claim: int, now: float) -> TaskRecord | None:
        reply = await self._run(self._requeue, [self._prefix, now, task_id, claim])
        self._leases.release(task_id, claim)
        if reply is None:
            return None
        [record] = self._changed([existing_record(reply)])
        return record

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> Cancellation | None:
        reply = await self._run(
            self._cancel, [self._prefix, now, task_id, tenant, self._retention_count], once=True
        )
        if reply[0] == b"none":
            return None
        record = existing_record(reply[1])
        if reply[0] == b"invalid":
            raise InvalidTransition(
                record,
                f"task {task_id} already finished as {record.state.name}; "
                "only PENDING or RUNNING tasks can be cancelled",
            )
        did = reply[2] if len(reply) > 2 else b""
        if did == b"requested":
            # This process's runner is told now; not again by the echo.
            self._cancels_told.add(task_id)
            outcome = CancelOutcome.REQUESTED
        elif did == b"cancelled":
            outcome = CancelOutcome.CANCELLED
        else:
            outcome = CancelOutcome.UNCHANGED
        self._changed([record])
        return Cancellation(record, outcome)

    async def retry(self, task_id: str, now: float, tenant: str = "") -> TaskRecord | None:
        reply = await self._run(
            self._retry,
            [self._prefix, now, task_id, tenant, self._max_queue, self._max_per_tenant or 0],
            once=True,
        )
        status = reply[0]
        if status == b"none":
            return None
        self._raise_if_full(reply)
        record = existing_record(reply[1])
        if status == b"invalid":
            raise InvalidTransition(
                record,
                f"task {task_id} is {record.state.name}; only FAILED or CANCELLED tasks "
                "can be retried",
            )
        self._changed([record])
        return record

    async def purge(self, finished_before: float) -> int:
        purged = 0
        while True:
            count, done = await self._run(self._purge, [self._prefix, finished_before])
            purged += int(count)
            if done:
                return purged

    # -- workers ------------------------------------------------------------

    async def append_logs(self, batches: Sequence[LogBatch]) -> None:
        await self._logs.append(batches)

    async def read_logs(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        return await self._logs.read(task_id, attempt, after, limit)

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._workers.register(worker)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._workers.unregister(worker_id)

    async def live_workers(self, now: float) -> list[WorkerInfo]:
        return await self._workers.live(now)

    # -- schedules ----------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        await self._schedules.create(schedule)

    async def get_schedule(self, tenant: str, schedule_id: str) -> ScheduleRecord | None:
        return await self._schedules.get(tenant, schedule_id)

    async def list_schedules(self, tenant: str | None = None) -> list[ScheduleRecord]:
        return await self._schedules.find(tenant)

    async def replace_schedule(
        self, schedule: ScheduleRecord, read_update_time: float
    ) -> ScheduleRecord | None:
        return await self._schedules.replace(schedule, read_update_time)

    async def advance_schedule(self, tenant: str, schedule_id: str, fired_until: float) -> None:
        await self._schedules.advance(tenant, schedule_id, fired_until)

    async def delete_schedule(self, tenant: str, schedule_id: str) -> bool:
        return await self._schedules.delete(tenant, schedule_id)

    # -- reads ----------------------------------------------------------------

    async def get(self, task_id: str, tenant: str = "") -> TaskRecord | None:
        record = await self._gets(task_id)
        return record if record is not None and record.tenant == tenant else None

    async def list_page(self, query: ListQuery) -> tuple[list[TaskRecord], int | None]:
        if not self._closed:
            self._list_index.start()
        size = query.page_size
        states = "".join(sorted(str(int(s)) for s in query.states))
        labels = json.dumps([list(pair) for pair in query.labels]) if query.labels else ""
        before = "+inf" if query.before_seq is None else f"({query.before_seq}"
        page: list[TaskRecord] = []
        while True:
            found, last = await self._run(
                self._list,
                [
                    self._prefix,
                    query.tenant,
                    before,
                    size + 1 - len(page),
                    states,
                    query.type,
                    labels,
                    _bound(query.created_after),
                    _bound(query.created_before),
                ],
            )
            page.extend(existing_record(values) for values in found)
            if len(page) > size:
                del page[size:]
                return page, page[-1].seq
            if last is None:
                return page, None
            before = f"({int(float(last))}"

    async def build_list_indexes(self) -> None:
        """Until the list indexes hold every task: the build of those stored
        before the indexes existed (see `_list_index`) is done, by this
        process or another."""
        await self._list_index.wait()

    async def depth(self) -> int:
        unfinished: int = await self._run(self._depth, [self._prefix])
        return unfinished

    # -- limits, per task type ----------------------------------------------

    async def declare_type_defaults(self, defaults: Mapping[str, TypeLimits], now: float) -> None:
        if not defaults:
            return
        args: list[Any] = [self._prefix, now]
        for task_type, limits in defaults.items():
            args += (task_type, *lua.limits_values(limits))
        await self._run(self._declare, args)

    async def update_type(
        self,
        task_type: str,
        now: float,
        *,
        limits: Mapping[str, float] | None = None,
        restore: Collection[str] = (),
        paused: bool | None = None,
    ) -> TypeSettings:
        changes = dict(limits or {})
        unknown = sorted(set(changes).union(restore).difference(LIMIT_NAMES))
        if unknown:
            raise ValueError(f"no limit {unknown[0]!r}")
        args: list[Any] = [
            *(self._prefix, now, task_type, "" if paused is None else int(paused)),
            *(len(restore), *restore),
        ]
        for name, value in changes.items():
            args += (name, lua.limit_text(name, value))
        stored = await self._run(self._update_type, args)
        return lua.type_settings_from(task_type, stored)

    async def type_settings(self) -> dict[str, TypeSettings]:
        try:
            members: Any = await self._redis.smembers(f"{self._prefix}:types")
            names = sorted(n.decode() for n in members)
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_type in names:
                    pipe.hgetall(f"{self._prefix}:limits:{task_type}")
                stored = await pipe.execute()
        except DOWN as exc:
            raise self._unavailable(exc) from exc
        return {
            task_type: lua.type_settings_from(
                task_type, [v for pair in fields.items() for v in pair]
            )
            for task_type, fields in zip(names, stored, strict=True)
        }

    async def type_counts(self) -> dict[str, TypeCounts]:
        try:
            counts: Any = await self._redis.hgetall(f"{self._prefix}:type_tasks")
        except DOWN as exc:
            raise self._unavailable(exc) from exc
        running: dict[str, int] = {}
        pending: dict[str, int] = {}
        for field, value in counts.items():
            kind, _, task_type = field.decode().partition(":")
            (running if kind == "r" else pending)[task_type] = int(value)
        return {
            task_type: TypeCounts(
                running=running.get(task_type, 0), pending=pending.get(task_type, 0)
            )
            for task_type in sorted(running.keys() | pending.keys())
        }

    async def backlog(self, now: float) -> list[BacklogGauge]:
        flat = await self._run(self._backlog, [self._prefix, now, BACKLOG_MAX_TENANTS])
        gauges = []
        for i in range(0, len(flat), 6):
            task_type, tenant, pending, due, running, oldest = flat[i : i + 6]
            gauges.append(
                BacklogGauge(
                    task_type.decode(),
                    tenant.decode(),
                    int(pending),
                    int(due),
                    int(running),
                    float(oldest) if oldest else None,
                )
            )
        return sorted(gauges, key=lambda g: (g.type, g.tenant))

    async def pending_reason(self, record: TaskRecord, now: float) -> PendingExplanation:
        key = record.concurrency_key
        paused, max_running, running, per_key, key_running, rate, tokens = await self._run(
            self._reason, [self._prefix, now, record.type, record.tenant, key or ""]
        )
        limits = TypeLimits(
            max_running=int(float(max_running)),
            max_running_per_key=int(float(per_key)),
            max_starts_per_second=float(rate),
        )
        return explain(
            LimitFigures(
                task_type=record.type,
                limits=limits,
                paused=paused == b"1",
                running=int(float(running)),
                key=key,
                key_running=int(float(key_running)),
                tokens=float(tokens),
            )
        )

    def subscribe(self, task_id: str) -> LatestSubscription:
        subscription = self._subscriptions.subscribe(task_id)
        self._stream.start()
        return subscription

    async def follow(self, feed_filter: FeedFilter, cursor: str | None = None) -> FeedReader:
        return await self._stream.follow(feed_filter, cursor)

    async def close(self) -> None:
        self._closed = True
        await self._leases.close(CLOSE_TIMEOUT_SECONDS)
        await self._follower.close(CLOSE_TIMEOUT_SECONDS)
        await self._stream.close(CLOSE_TIMEOUT_SECONDS)
        await self._list_index.close()
        for client in (self._redis, self._pubsub_redis):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    # -- internals --------------------------------------------------------------

    async def _send_creates(self, batches: list[_CreateBatch]) -> list[Any | Exception]:
        args: list[Any] = [self._prefix, self._max_queue, self._max_per_tenant or 0, self._owner]
        for batch in batches:
            args += batch
        replies: list[Any] = await self._run(self._create, args, once=True)
        return replies

    async def _send_gets(self, task_ids: list[str]) -> list[TaskRecord | Exception | None]:
        replies = await self._run(self._fetch, [self._prefix, *task_ids])
        return [lua.record_from(values) for values in replies]

    async def _run(self, script: AsyncScript, args: list[Any], *, once: bool = False) -> Any:
        """Run a script. With `once`, the call gets a key of its own that
        the script keeps its answer under for a while: the client sends a
        script again when its connection dropped before the reply, and the
        second run then answers as the first instead of acting again
        (creating, claiming, retrying twice). The scripts called without
        are safe to run twice: a hand-back is fenced by its claim number
        (the second run finds the task no longer held, and the draining
        runner only counts it); progress writes the same values again;
        renew, reap and purge find nothing more to do."""
        self._due_hint = None  # any change may move the earliest due time
        keys = [f"{self._prefix}:call:{self._owner}:{next(self._calls)}"] if once else []
        try:
            return await script(keys=keys, args=args)
        except DOWN as exc:
            raise self._unavailable(exc) from exc

    def _raise_if_full(self, reply: list[Any]) -> None:
        if reply[0] == b"full":
            raise QueueFull(int(reply[1]), self._max_queue)
        if reply[0] == b"quota":
            assert self._max_per_tenant is not None
            raise QueueFull(int(reply[2]), self._max_per_tenant, reply[1].decode())

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"{self._where} is unavailable: {exc}")

    def _claimed(self, claimed: list[Any], earliest: bytes | None) -> list[TaskRecord]:
        # The runner asks for the next due time right after claiming: the
        # claim read it already.
        self._due_hint = (asyncio.get_running_loop().time(), earliest)
        records = self._delivered(existing_record(values) for values in claimed)
        self._leases.hold(records)
        return records

    def _delivered(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Hand records this process just changed to the watchers of their
        tasks at once; their echo on the feed stream then finds nothing
        newer for them (feed readers take them from the stream, in order)."""
        records = list(records)
        subscriptions = self._subscriptions
        if subscriptions:
            for record in records:
                subscriptions.deliver(record)
        return records

    def _changed(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Records this process just changed: to its watchers, and what
        they mean to its runner (due work, a cancel request) to its
        listener at once, rather than after a round trip through pub/sub."""
        records = self._delivered(records)
        listener = self._listener
        if listener is not None:
            for record in records:
                announce(listener, record)
        return records


def _bound(time: float | None) -> bytes:
    """A bound of a list on create time as list.lua takes it: "" for none."""
    return b"" if time is None else lua.number(time)
