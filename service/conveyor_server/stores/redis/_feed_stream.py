"""How a RedisStore follows the change feed every process writes: the
stream `P:feed`, one entry per script call, "id:version ..." of each change
and the reply_to of each change's task.

Each process reads the stream from where it started (XREAD), reads the
records of the changes someone here watches, and publishes them to its own
`ChangeFeed` at their stream positions, which every replica shares: a
cursor from one replica is good on another. A reader that resumes is served
from the stream itself (`backfill`), so the feed keeps no ring of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from conveyor_server.stores._errors import StoreUnavailable
from conveyor_server.stores._feed import ChangeFeed, FeedFilter, FeedReader, Position
from conveyor_server.stores._records import TaskRecord
from conveyor_server.stores.redis import scripts as lua
from conveyor_server.stores.redis._connection import DOWN

logger = logging.getLogger("conveyor_server.stores.redis.store")

# Records read per fetch call, and stream entries per read.
FETCH_CHUNK = 500
READ_COUNT = 500
# How long one blocking read waits: under the client's socket timeout.
BLOCK_MS = 1000
# How long a new reader waits for the stream to be followed at all.
READY_SECONDS = 5.0

# A change: its position, task id, version, and its task's reply_to ("" for
# none, None when the entry does not say: written before reply_to existed).
_Change = tuple[Position, str, int, str | None]
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


def entry_position(entry_id: bytes, index: int) -> Position:
    ms, _, seq = entry_id.partition(b"-")
    return (int(ms), int(seq), index)


def entry_id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


def _changes(entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[_Change]:
    changes: list[_Change] = []
    for stream_id, fields in entries:
        listed = fields.get(b"c", b"").split()
        replies = fields.get(b"r")
        # "=name" per change, "=" for none.
        reply_tos: list[str | None] = (
            [None] * len(listed)
            if replies is None
            else [token[1:].decode() for token in replies.split()]
        )
        for index, (change, reply_to) in enumerate(zip(listed, reply_tos, strict=True)):
            task_id, _, version = change.rpartition(b":")
            changes.append(
                (entry_position(stream_id, index), task_id.decode(), int(version), reply_to)
            )
    return changes


class FeedStream:
    """Follows `P:feed` while anyone here watches, reconnecting with backoff;
    publishes what it reads to `feed`.

    With nobody watching it stops reading, so that a process nobody watches
    through pays nothing for the feed; when a watcher comes, it starts again
    at the stream's end (a resumed reader reads back from the stream).
    """

    def __init__(
        self, redis: Redis, reads: Redis, *, prefix: str, where: str, fetch: AsyncScript
    ) -> None:
        self._redis = redis
        self._reads = reads
        self._prefix = prefix
        self._key = f"{prefix}:feed"
        self._where = where
        self._fetch = fetch
        self.feed = ChangeFeed(epoch="r", ring_size=0, backfill=self.backfill)
        self._last: bytes | None = None
        # Records read at a version newer than the change being read, kept
        # until the change that made them comes.
        self._ahead: dict[str, TaskRecord] = {}
        self._ready: asyncio.Event | None = None
        self._wanted: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # Readers on their way in (`follow`): between the stream being
        # followed and their joining the feed, they count as watching, or
        # the follower could stop in that gap and leave them unserved.
        self._joining = 0
        self._closed = False

    def start(self) -> None:
        """Someone here watches (or is about to): follow the stream."""
        if self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first call on a loop
        if self._ready is None or self._wanted is None:
            self._ready = asyncio.Event()
            self._wanted = asyncio.Event()
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="conveyor-redis-feed")

    def _watched(self) -> bool:
        return self._joining > 0 or self.feed.readers > 0 or bool(self.feed.subscriptions)

    async def follow(self, feed_filter: FeedFilter, cursor: str | None) -> FeedReader:
        """A reader of the feed (`ChangeFeed.follow`), once the stream is
        followed."""
        self._joining += 1
        try:
            await self.ready()
            return await self.feed.follow(feed_filter, cursor)
        finally:
            self._joining -= 1

    async def ready(self) -> None:
        """Wait until the stream is followed: every change made from now on
        reaches the feed."""
        self.start()
        assert self._ready is not None
        try:
            await asyncio.wait_for(self._ready.wait(), READY_SECONDS)
        except TimeoutError:
            raise StoreUnavailable(
                f"{self._where} is unavailable: cannot follow its changes"
            ) from None

    async def close(self, wait_seconds: float) -> None:
        self._closed = True
        self.feed.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=wait_seconds)
            self._task = None

    async def _follow(self) -> None:
        delay = 0.0
        outage = False
        assert self._ready is not None and self._wanted is not None
        while not self._closed:
            try:
                await self._wanted.wait()
                await self._catch_up()
                if outage:
                    logger.info("%s is reachable again; following its changes", self._where)
                outage = False
                delay = 0.0
                self._ready.set()
                while not self._closed:
                    assert self._last is not None
                    reply: Any = await self._reads.xread(
                        {self._key: self._last}, count=READ_COUNT, block=BLOCK_MS
                    )
                    if reply:
                        entries: _Entries = reply[0][1]
                        await self._take(entries)
                        self._last = entries[-1][0]
                    if not self._watched():
                        # Idle until a watcher comes; then start afresh.
                        self._ready.clear()
                        self._wanted.clear()
                        self._last = None
                        self._ahead.clear()
                        break
            except asyncio.CancelledError:
                raise
            except (*DOWN, RedisError) as exc:
                if not outage:
                    logger.warning("lost %s change feed (%s); reconnecting", self._where, exc)
                outage = True
            except Exception:
                logger.exception("change feed follower failed; restarting it")
            delay = min(max(delay * 2, 0.1), 5.0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _catch_up(self) -> None:
        """Start at the stream's end; after an outage, carry on where the
        reads stopped if the stream still holds that, else tell every
        reader to re-list. Either way, re-read every watched task: a change
        made before the stream was followed reaches its watchers so."""
        first, last = await self._bounds()
        if self._last is None:
            self._last = last
            self.feed.start_at(entry_position(last, 1 << 30))
        elif first is not None and _id(first) > _id(self._last):
            logger.warning("the change feed of %s was trimmed past this reader", self._where)
            self._last = last
            self._ahead.clear()
            self.feed.gap(entry_position(last, 1 << 30))
        watched = list(self.feed.subscriptions)
        for start in range(0, len(watched), FETCH_CHUNK):
            for record in await self._read(watched[start : start + FETCH_CHUNK]):
                self.feed.subscriptions.deliver(record)

    async def _bounds(self) -> tuple[bytes | None, bytes]:
        """The first entry the stream holds (None when empty) and the last
        id it generated."""
        try:
            info: dict[Any, Any] = await self._reads.xinfo_stream(self._key)
        except ResponseError:
            return None, b"0-0"  # no stream yet
        first = info.get("first-entry")
        last = info.get("last-generated-id", b"0-0")
        return (first[0] if first else None), _bytes(last)

    async def _take(self, entries: _Entries) -> None:
        feed = self.feed
        subscriptions = feed.subscriptions
        changes = _changes(entries)
        records: dict[str, TaskRecord] = {}
        asked: set[str] = set()
        while True:
            # Asked again after each read: a reader that came during it
            # (a stream reopened from a cursor before these changes) wants
            # them too, and nothing between the last ask and the publishing
            # below awaits.
            wanted = {
                task_id
                for _, task_id, version, reply_to in changes
                if task_id not in asked
                and (
                    subscriptions.behind(task_id, version)
                    or feed.read_by_readers(task_id, reply_to)
                )
            }
            if not wanted:
                break
            asked |= wanted
            ids = list(wanted)
            for start in range(0, len(ids), FETCH_CHUNK):
                for found in await self._read(ids[start : start + FETCH_CHUNK]):
                    records[found.id] = found
        ahead = self._ahead
        for position, task_id, version, _ in changes:
            early = ahead.get(task_id)
            if early is not None:
                if version < early.version:
                    feed.advance(position)
                    continue
                del ahead[task_id]
                if version == early.version:
                    feed.publish(position, early)
                    continue
            record = records.get(task_id)
            if record is None:
                feed.advance(position)
            elif record.version > version:
                # Read after later changes were made: it is published at
                # the position of its own change, further on, so that a
                # cursor never stands before a state already sent.
                ahead[task_id] = record
                feed.advance(position)
            else:
                feed.publish(position, record)

    async def _read(self, task_ids: list[str]) -> list[TaskRecord]:
        if not task_ids:
            return []
        replies = await self._fetch(args=[self._prefix, *task_ids])
        records = []
        for values in replies:
            record = lua.record_from(values)
            if record is not None:
                records.append(record)
        return records

    async def backfill(
        self, after: Position, head: Position
    ) -> list[tuple[Position, TaskRecord]] | None:
        """The changes after `after` up to `head`, each task's latest record
        at its last position; None when the stream no longer holds them all
        or never held `after`."""
        try:
            first, last = await self._bounds()
            after_id = _id(entry_id(after).encode())
            if after_id > _id(last):
                return None  # never written
            if first is None:
                return [] if after_id == _id(last) else None
            if _id(first) > after_id:
                return None  # entries after it may have been trimmed
            if after >= head:
                return []
            latest: dict[str, tuple[Position, int]] = {}
            start = entry_id(after)
            while True:
                entries: Any = await self._redis.xrange(
                    self._key, min=start, max=entry_id(head), count=READ_COUNT
                )
                for position, task_id, version, _ in _changes(entries):
                    if after < position <= head:
                        latest[task_id] = (position, version)
                if len(entries) < READ_COUNT:
                    break
                start = "(" + entries[-1][0].decode()
            ids = list(latest)
            found: list[tuple[Position, TaskRecord]] = []
            for begin in range(0, len(ids), FETCH_CHUNK):
                for record in await self._read(ids[begin : begin + FETCH_CHUNK]):
                    position, version = latest[record.id]
                    # A newer state is the follower's to publish, at its
                    # own position after `head`.
                    if record.version == version:
                        found.append((position, record))
        except (*DOWN, RedisError) as exc:
            raise StoreUnavailable(f"{self._where} is unavailable: {exc}") from exc
        found.sort(key=lambda item: item[0])
        return found


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _id(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return (int(ms), int(seq or 0))
