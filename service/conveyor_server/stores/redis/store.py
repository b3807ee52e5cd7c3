"""`redis://host:port/db?prefix=name`: one store shared by several processes.

Server replicas and worker-only processes open the same URL and prefix.
Each state change is one Lua script (see `scripts`); changes reach other
processes on pub/sub channels: task versions for watchers, cancel requests
for runners, and word of new work. Times are the `now` values callers pass,
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
import json
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor_server._ids import new_task_id
from conveyor_server.stores._errors import (
    IdempotencyConflict,
    InvalidTransition,
    QueueFull,
    StoreUnavailable,
)
from conveyor_server.stores._protocol import StoreListener, announce
from conveyor_server.stores._records import (
    Cancellation,
    CancelOutcome,
    ListQuery,
    NewTask,
    Outcome,
    Progress,
    TaskRecord,
)
from conveyor_server.stores._subscriptions import LatestSubscription, Subscriptions
from conveyor_server.stores.redis import scripts as lua
from conveyor_server.stores.redis.scripts import existing_record, number, opt, pack, progress_values

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 5.0
DEFAULT_PREFIX = "conveyor"
DEFAULT_LEASE_MARGIN = 2.0
POLL_INTERVAL_SECONDS = 1.0
CLOSE_TIMEOUT_SECONDS = 2.0
_KEEPALIVE: dict[int, int] = {
    option: value
    for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), 10),
        (getattr(socket, "TCP_KEEPINTVL", None), 5),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    )
    if option is not None
}
# How long the earliest due time a claim read stands in for next_due_time.
DUE_HINT_SECONDS = 0.05
# Records the subscription fetcher reads per call.
FETCH_CHUNK = 500

# Redis cannot be reached, or cannot take writes now (full under a noeviction
# policy, a replica during failover): the call may be retried later.
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError, ReadOnlyError)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
# One create call as the script takes it: now, lengths, values.
_CreateBatch = tuple[float, bytes, bytes]

# -- subscriptions ----------------------------------------------------------------


class _GroupCommit(Generic[_Item, _Result]):
    """Shares round trips among concurrent calls: a call made while none is
    in flight goes at once; calls made meanwhile wait and go together in the
    next one. No added latency when idle, one round trip per wave when busy.

    `send` takes the items of one wave and returns, per item, its result or
    the exception to raise for it.
    """

    def __init__(self, send: Callable[[list[_Item]], Awaitable[list[_Result | Exception]]]) -> None:
        self._send = send
        self._waiting: list[tuple[_Item, asyncio.Future[_Result]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, item: _Item) -> _Result:
        if self._busy:
            future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            return await future
        self._busy = True
        try:
            [result] = await self._send([item])
        finally:
            self._next_wave()
        if isinstance(result, Exception):
            raise result
        return result

    def _next_wave(self) -> None:
        if self._waiting:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False
            self._drainer = None

    async def _drain(self) -> None:
        wave, self._waiting = self._waiting, []
        try:
            results = await self._send([item for item, _ in wave])
        except Exception as exc:
            for _, future in wave:
                if not future.done():
                    # One exception object per caller: raising a shared one
                    # from several tasks would tangle its traceback.
                    copy = StoreUnavailable(*exc.args) if isinstance(exc, StoreUnavailable) else exc
                    future.set_exception(copy)
        else:
            for (_, future), result in zip(wave, results, strict=True):
                if future.done():
                    continue  # its caller gave up
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._next_wave()


@dataclass(frozen=True, slots=True)
class LeaseReport:
    """What `RedisStore.renew` found out about the attempts it renewed."""

    # Attempts this process no longer holds (the lease lapsed and the task
    # was re-queued or finished elsewhere).
    lost: list[str] = field(default_factory=list)
    # Attempts whose task has a cancel request.
    cancel_requested: list[str] = field(default_factory=list)


# -- the store ------------------------------------------------------------------


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
        parts = urlsplit(url)
        prefix = DEFAULT_PREFIX
        margin = DEFAULT_LEASE_MARGIN
        passed: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                prefix = value
            elif name == "lease_margin":
                try:
                    margin = float(value)
                except ValueError:
                    margin = math.nan
                if not (math.isfinite(margin) and margin >= 0):
                    raise ValueError(
                        f"store URL option lease_margin must be a number of seconds "
                        f"of 0 or more, got {value!r}"
                    )
            else:
                passed.append((name, value))
        if not prefix:
            raise ValueError("store URL option prefix must not be empty")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._max_queue = max_queue
        self._max_per_tenant = max_queue_per_tenant
        self._retention_count = retention_count
        self._lease_seconds = float(lease_seconds)
        self._lease_margin = margin
        self._prefix = prefix
        self._where = f"Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._owner_bytes = self._owner.encode()
        self._events_channel = f"{prefix}:events".encode()
        self._cancel_channel = f"{prefix}:cancel".encode()
        self._work_channel = f"{prefix}:work".encode()

        client_url = urlunsplit(parts._replace(query=urlencode(passed)))
        options: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "socket_timeout": READ_TIMEOUT_SECONDS,
            # Names the store's connections in CLIENT LIST (no spaces allowed).
            "client_name": "conveyor:" + re.sub(r"[^!-~]", "_", prefix),
            # A Redis host that vanishes without closing the connection is
            # noticed in about 25 s, not the system's default two hours: the
            # pub/sub listener blocks on its read with no timeout of its own.
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
        }
        # One retry, on a fresh connection, for a pooled connection that
        # died while idle (a Redis restart). Timeouts are not retried: the
        # script may have run, and none of them is safe to run twice.
        self._redis = Redis.from_url(
            client_url,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **options,
        )
        # Pub/sub on its own client that never reconnects by itself: the
        # listener must know of every reconnect, to catch up on what it missed.
        self._pubsub_redis = Redis.from_url(
            client_url, retry=Retry(NoBackoff(), 0), health_check_interval=10, **options
        )

        def script(body: str) -> AsyncScript:
            return self._redis.register_script(lua.COMMON + body)

        self._create = script(lua.CREATE)
        self._claim = script(lua.CLAIM)
        self._set_progress = script(lua.SET_PROGRESS)
        self._complete = script(lua.COMPLETE)
        self._requeue = script(lua.REQUEUE)
        self._cancel = script(lua.CANCEL)
        self._retry = script(lua.RETRY)
        self._renew = script(lua.RENEW)
        self._reap = script(lua.REAP)
        self._purge = script(lua.PURGE)
        self._depth = script(lua.DEPTH)
        self._list = script(lua.LIST)
        self._fetch = script(lua.FETCH)
        self._shared_secret = script(lua.SIGNING_KEY)
        self._signing_key: bytes | None = None

        self._creates = _GroupCommit(self._send_creates)
        self._gets = _GroupCommit(self._send_gets)

        self._listener: StoreListener | None = None
        self._subscriptions = Subscriptions()
        self._to_fetch: set[str] = set()
        self._listening: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._clock = clock
        # The attempts this process claimed and has not reported the end
        # of: their leases are renewed while they run.
        self._held: dict[str, int] = {}
        # Cancel requests this process made and already told its listener
        # of; their echo on the cancel channel is not passed on again.
        self._cancels_told: set[str] = set()
        self._due_hint: tuple[float, bytes | None] | None = None
        self._closed = False

    # -- leases and notifications ----------------------------------------

    @property
    def shared(self) -> bool:
        return True

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    async def signing_key(self) -> bytes:
        if self._signing_key is None:
            self._signing_key = await self._run(self._shared_secret, [self._prefix, os.urandom(32)])
        return self._signing_key

    def attach(self, listener: StoreListener) -> None:
        self._listener = listener
        self._start_listening()
        if self._upkeep is None and not self._closed:
            self._upkeep = asyncio.create_task(self._keep_up(), name="conveyor-redis-upkeep")

    async def _keep_up(self) -> None:
        """Renew the leases of held attempts every third of a lease; reap
        attempts of dead processes about every lease (jittered, so replicas
        do not all reap at once); every poll interval, tell the listener if
        work is due, in case a word of new work was lost."""
        interval = min(self._lease_seconds / 3, POLL_INTERVAL_SECONDS)
        next_renew = next_reap = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            listener = self._listener
            assert listener is not None
            try:
                if time.monotonic() >= next_renew and self._held:
                    next_renew = time.monotonic() + self._lease_seconds / 3
                    held = list(self._held.items())
                    report = await self.renew(held, self._clock())
                    attempts = dict(held)
                    for task_id in report.lost:
                        if self._held.get(task_id) == attempts[task_id]:
                            del self._held[task_id]
                        listener.attempt_lost(task_id, attempts[task_id])
                    for task_id in report.cancel_requested:
                        listener.cancel_requested(task_id)
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self._lease_seconds * random.uniform(0.5, 1.0)
                    if await self.reap(self._clock()):
                        listener.work_available()
                if await self._work_is_due():
                    listener.work_available()
            except StoreUnavailable:
                logger.warning("could not renew leases; %s is unavailable", self._where)
            except Exception:
                logger.exception("lease upkeep failed")

    async def _work_is_due(self) -> bool:
        """Whether a task is claimable now: how a word of new work that was
        lost (pub/sub down, a message dropped) is made up for."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zcard(f"{self._prefix}:ready")
                pipe.zrange(f"{self._prefix}:delayed", 0, 0, withscores=True)
                ready, earliest = await pipe.execute()
        except _DOWN as exc:
            raise self._unavailable(exc) from exc
        return bool(ready) or bool(earliest and earliest[0][1] <= self._clock())

    async def renew(self, leases: Sequence[tuple[str, int]], now: float) -> LeaseReport:
        if not leases:
            return LeaseReport()
        args: list[Any] = [self._prefix, now, self._lease_seconds]
        for task_id, attempt in leases:
            args += (task_id, attempt)
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
            labels = None if new.labels is None else json.dumps(new.labels, separators=(",", ":"))
            values += (
                task_id.encode(),
                new.type.encode(),
                new.payload,
                opt(labels),
                str(new.max_attempts).encode(),
                str(new.priority).encode(),
                b"" if new.timeout is None else b"=" + number(new.timeout),
                opt(new.idempotency_key),
                opt(new.fingerprint),
                number(due),
                new.tenant.encode(),
                b"1" if due > now else b"0",
            )
        reply = await self._creates((now, *pack(values)))
        status = reply[0]
        if status == b"conflict":
            earlier = reply[2].decode()
            raise IdempotencyConflict(reply[1].decode(), earlier or None)
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

    async def claim(self, limit: int, now: float) -> list[TaskRecord]:
        claimed, earliest = await self._run(
            self._claim, [self._prefix, now, max(0, limit), self._lease_seconds, self._owner]
        )
        # The runner asks for the next due time right after claiming: the
        # claim read it already.
        self._due_hint = (asyncio.get_running_loop().time(), earliest)
        records = self._delivered(existing_record(values) for values in claimed)
        for record in records:
            self._held[record.id] = record.attempt
        return records

    async def next_due_time(self) -> float | None:
        hint, self._due_hint = self._due_hint, None
        if hint is not None and asyncio.get_running_loop().time() - hint[0] < DUE_HINT_SECONDS:
            return None if hint[1] is None else float(hint[1])
        try:
            earliest = await self._redis.zrange(f"{self._prefix}:delayed", 0, 0, withscores=True)
        except _DOWN as exc:
            raise self._unavailable(exc) from exc
        return float(earliest[0][1]) if earliest else None

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
            failure = outcome.failure
            if failure is None:
                error: tuple[bytes, bytes, bytes] = (b"", b"", b"")
            else:
                error = (
                    opt(failure.code),
                    failure.message.encode(),
                    failure.exception_type.encode(),
                )
            values += (
                outcome.task_id.encode(),
                str(outcome.attempt).encode(),
                b"1" if outcome.cancelled else b"0",
                opt(outcome.result),
                *error,
                b"" if outcome.retry_at is None else number(outcome.retry_at),
                *progress_values(outcome.progress),
            )
        reply = await self._run(
            self._complete, [self._prefix, now, self._retention_count, self._owner, *pack(values)]
        )
        for outcome in outcomes:
            self._release(outcome.task_id, outcome.attempt)
        return self._changed(existing_record(values) for values in reply)

    async def requeue(self, task_id: str, attempt: int, now: float) -> TaskRecord | None:
        reply = await self._run(self._requeue, [self._prefix, now, task_id, attempt])
        self._release(task_id, attempt)
        if reply is None:
            return None
        [record] = self._changed([existing_record(reply)])
        return record

    async def cancel(self, task_id: str, now: float, tenant: str = "") -> Cancellation | None:
        reply = await self._run(
            self._cancel, [self._prefix, now, task_id, tenant, self._retention_count]
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

    # -- reads ----------------------------------------------------------------

    async def get(self, task_id: str, tenant: str = "") -> TaskRecord | None:
        record = await self._gets(task_id)
        return record if record is not None and record.tenant == tenant else None

    async def list_page(self, query: ListQuery) -> tuple[list[TaskRecord], int | None]:
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
                ],
            )
            page.extend(existing_record(values) for values in found)
            if len(page) > size:
                del page[size:]
                return page, page[-1].seq
            if last is None:
                return page, None
            before = f"({int(float(last))}"

    async def depth(self) -> int:
        unfinished: int = await self._run(self._depth, [self._prefix])
        return unfinished

    def subscribe(self, task_id: str) -> LatestSubscription:
        subscription = self._subscriptions.subscribe(task_id)
        self._start_listening()
        return subscription

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._listening, self._fetching, self._upkeep) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_SECONDS)
        self._listening = self._fetching = self._upkeep = None
        self._subscriptions.clear()
        for client in (self._redis, self._pubsub_redis):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    # -- internals --------------------------------------------------------------

    async def _send_creates(self, batches: list[_CreateBatch]) -> list[Any | Exception]:
        args: list[Any] = [self._prefix, self._max_queue, self._max_per_tenant or 0, self._owner]
        for batch in batches:
            args += batch
        replies: list[Any] = await self._run(self._create, args)
        return replies

    async def _send_gets(self, task_ids: list[str]) -> list[TaskRecord | Exception | None]:
        replies = await self._run(self._fetch, [self._prefix, *task_ids])
        return [lua.record_from(values) for values in replies]

    async def _run(self, script: AsyncScript, args: list[Any]) -> Any:
        self._due_hint = None  # any change may move the earliest due time
        try:
            return await script(args=args)
        except _DOWN as exc:
            raise self._unavailable(exc) from exc

    def _raise_if_full(self, reply: list[Any]) -> None:
        if reply[0] == b"full":
            raise QueueFull(int(reply[1]), self._max_queue)
        if reply[0] == b"quota":
            assert self._max_per_tenant is not None
            raise QueueFull(int(reply[2]), self._max_per_tenant, reply[1].decode())

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"{self._where} is unavailable: {exc}")

    def _delivered(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        """Hand records this process just changed to its own watchers at
        once; the echo on the events channel then finds nothing newer."""
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

    def _release(self, task_id: str, attempt: int) -> None:
        """The end of a held attempt was reported: its lease needs no renewal."""
        if self._held.get(task_id) == attempt:
            del self._held[task_id]

    def _start_listening(self) -> None:
        if self._closed or (self._listening is not None and not self._listening.done()):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first call on a loop
        self._listening = asyncio.create_task(self._listen(), name="conveyor-redis-listener")

    async def _listen(self) -> None:
        """Follow the channels for as long as the store is open, reconnecting
        with backoff; after each (re)connect, catch up on what may have been
        missed meanwhile."""
        channels = (self._events_channel, self._cancel_channel, self._work_channel)
        delay = 0.0
        outage = False
        while not self._closed:
            pubsub = self._pubsub_redis.pubsub()
            try:
                await pubsub.subscribe(*channels)
                confirmed = 0
                while confirmed < len(channels):
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        confirmed += 1
                    else:
                        self._on_message(message)
                if outage:
                    logger.info("%s is reachable again; following its changes", self._where)
                outage = False
                delay = 0.0
                # Everything published while not subscribed is lost: look
                # for work and re-read every watched task.
                if self._listener is not None:
                    self._listener.work_available()
                self._cancels_told.clear()
                self._fetch_later(self._subscriptions)
                # Blocking reads: a read with a timeout can swallow a cancel
                # that arrives as it times out. A dead Redis closes the
                # socket; a vanished host is found by TCP keepalive.
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None:
                        self._on_message(message)
                return
            except asyncio.CancelledError:
                raise
            except (*_DOWN, RedisError) as exc:
                if not outage:
                    logger.warning(
                        "lost %s pub/sub (%s); reconnecting, meanwhile workers poll for work",
                        self._where,
                        exc,
                    )
                outage = True
            except Exception:
                logger.exception("store listener failed; restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            delay = min(max(delay * 2, 0.1), 5.0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _on_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel = message["channel"]
        data: bytes = message["data"]
        if channel == self._events_channel:
            subscriptions = self._subscriptions
            if not subscriptions:
                return
            stale: list[str] = []
            for change in data.split():
                task_id_bytes, _, version = change.rpartition(b":")
                task_id = task_id_bytes.decode()
                if subscriptions.behind(task_id, int(version)):
                    stale.append(task_id)
            if stale:
                self._fetch_later(stale)
        elif channel == self._cancel_channel:
            task_id = data.decode()
            if task_id in self._cancels_told:
                self._cancels_told.discard(task_id)
            elif self._listener is not None:
                self._listener.cancel_requested(task_id)
        elif (
            channel == self._work_channel
            and self._listener is not None
            # Work this process made was announced to its runner already.
            and data != self._owner_bytes
        ):
            self._listener.work_available()

    def _fetch_later(self, task_ids: Iterable[str]) -> None:
        self._to_fetch.update(task_ids)
        if self._to_fetch and (self._fetching is None or self._fetching.done()):
            self._fetching = asyncio.create_task(self._fetch_watched(), name="conveyor-redis-fetch")

    async def _fetch_watched(self) -> None:
        """Read the tasks whose watchers are behind and deliver them; a read
        that fails is tried again until it succeeds or nobody watches."""
        delay = 0.05
        while self._to_fetch:
            subscriptions = self._subscriptions
            task_ids = [i for i in self._to_fetch if subscriptions.watching(i)][:FETCH_CHUNK]
            self._to_fetch.difference_update(task_ids)
            self._to_fetch = {i for i in self._to_fetch if subscriptions.watching(i)}
            if not task_ids:
                continue
            try:
                replies = await self._fetch(args=[self._prefix, *task_ids])
            except (*_DOWN, RedisError):
                self._to_fetch.update(task_ids)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            for values in replies:
                record = lua.record_from(values)
                if record is not None:
                    subscriptions.deliver(record)
