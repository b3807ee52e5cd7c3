"""A store's change feed: every durable change of every task, once, in the
order made, and the readers of it.

Each store owns one `ChangeFeed` and hands it each change once it is
durable. Two kinds of reader take from it:

- per-task subscriptions (`subscribe`, behind `WatchTask`), latest-only
  mailboxes keyed by the task's version;
- feed readers (`follow`, behind `WatchTasks`), each a latest-per-task
  mailbox over a filter, ordered by position: a slow reader holds at most
  one change per task, never a backlog.

Every change has a position in the feed; a reader's messages carry it as an
opaque cursor. A reader that resumes from a cursor gets, for every task
that changed after it, the task's latest state, in position order, without
gaps: the feed keeps a ring of recent changes to replay from, and a shared
store can read further back (`Backfill`). Where it cannot (the cursor is
older than what is kept, or names another feed) the reader's first message
is a reset: re-list, then carry on from the reset's cursor.

Messages are delivered in increasing position: a task that changes again
while its reader is behind moves to the back of the reader's mailbox, so a
cursor handed out never skips a change that was not superseded.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from conveyor_server.stores._records import State, TaskRecord
from conveyor_server.stores._subscriptions import LatestSubscription, Subscriptions

# A position in the feed: a counter on a store of one process; a stream
# entry id and the index of the change in it on Redis. Tuples compare in
# order.
Position = tuple[int, ...]

# Changes a store of one process keeps for readers that resume.
RING_SIZE = 10_000


class BadCursor(ValueError):
    """A cursor that is not one of this feed's: the reader starts with a reset."""


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which changes a feed reader gets: those of the tenant's tasks whose
    snapshot matches every part given (any of `states`, the `type`, all of
    `labels`, any of `ids`). With `reply_to`, a task submitted with that
    reply_to matches as well as one of `ids` (either one), and the other
    parts still apply. Type, labels, reply_to and tenant never change; a
    task leaving `states` is not seen leaving (leave `states` empty to see
    it)."""

    tenant: str = ""
    states: frozenset[State] = frozenset()
    type: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ids: frozenset[str] = frozenset()
    reply_to: str = ""

    def matches(self, record: TaskRecord) -> bool:
        if record.tenant != self.tenant:
            return False
        if self.states and record.state not in self.states:
            return False
        if self.type and record.type != self.type:
            return False
        if self.reply_to:
            if record.reply_to != self.reply_to and record.id not in self.ids:
                return False
        elif self.ids and record.id not in self.ids:
            return False
        if self.labels:
            labels = record.labels or {}
            return all(labels.get(k) == v for k, v in self.labels)
        return True


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One message of a feed reader: the latest snapshot of a task and the
    cursor to resume after it, or (record None) a reset: changes may have
    been missed, re-list and carry on from `cursor`."""

    cursor: str
    record: TaskRecord | None

    @property
    def reset(self) -> bool:
        return self.record is None


# Reads the changes after one position, up to and including another, from
# the shared store: (position, record) in order. None when the store no
# longer has them all.
Backfill = Callable[[Position, Position], Awaitable[list[tuple[Position, TaskRecord]] | None]]


class FeedReader:
    """A latest-per-task mailbox over one filter, fed by its feed on the
    event loop; `next()` gives the change with the lowest position."""

    __slots__ = ("_closed", "_feed", "_pending", "_reset", "_waiter", "filter", "start")

    def __init__(self, feed: ChangeFeed, feed_filter: FeedFilter) -> None:
        self._feed = feed
        self.filter = feed_filter
        # The cursor of the feed's head when the reader began: where a
        # client that read nothing yet resumes.
        self.start = feed.cursor(feed.head)
        self._pending: OrderedDict[str, tuple[Position, TaskRecord]] = OrderedDict()
        self._reset: Position | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def deliver(self, position: Position, record: TaskRecord) -> None:
        pending = self._pending
        pending.pop(record.id, None)
        pending[record.id] = (position, record)
        self._wake()

    def reset(self, position: Position) -> None:
        """Changes may have been lost: say so before anything newer."""
        self._pending.clear()
        self._reset = position
        self._wake()

    def merge(self, earlier: Iterable[tuple[Position, TaskRecord]]) -> None:
        """Add changes read back from before this reader was attached: the
        latest of each task, all in position order."""
        latest: dict[str, tuple[Position, TaskRecord]] = {}
        for position, record in earlier:
            if self.filter.matches(record):
                latest[record.id] = (position, record)
        latest.update(self._pending)
        self._pending = OrderedDict(sorted(latest.items(), key=lambda item: item[1][0]))
        self._wake()

    @property
    def backlog(self) -> int:
        """Tasks with a change waiting to be read."""
        return len(self._pending)

    async def next(self) -> FeedChange:
        while self._reset is None and not self._pending:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._reset is not None:
            position, self._reset = self._reset, None
            return FeedChange(self._feed.cursor(position), None)
        _, (position, record) = self._pending.popitem(last=False)
        return FeedChange(self._feed.cursor(position), record)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._feed._detach(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@dataclass(slots=True)
class _Readers:
    """The readers of one tenant: those with a reply_to by it, those naming
    ids by id (a reader with both is under each), and the rest. A change
    is matched against the readers it may concern, not against every one:
    a server holds a reply_to stream per client."""

    by_id: dict[str, set[FeedReader]] = field(default_factory=dict)
    by_reply: dict[str, set[FeedReader]] = field(default_factory=dict)
    open: set[FeedReader] = field(default_factory=set)


class ChangeFeed:
    """The one feed of a store's changes; see the module docstring.

    `epoch` names the feed in its cursors: a random one for a store of one
    process (its positions start again after a restart), a fixed one for a
    shared store whose positions are shared.
    """

    def __init__(
        self,
        *,
        epoch: str | None = None,
        ring_size: int | None = None,
        backfill: Backfill | None = None,
    ) -> None:
        self.epoch = epoch or os.urandom(4).hex()
        self.subscriptions = Subscriptions()
        self._ring: deque[tuple[Position, TaskRecord]] = deque(
            maxlen=RING_SIZE if ring_size is None else ring_size
        )
        # Positions after `_floor` up to `_head` are all in the ring.
        self._floor: Position = (0,)
        self._head: Position = (0,)
        self._backfill = backfill
        self._tenants: dict[str, _Readers] = {}
        self.readers = 0

    # -- the store's side -------------------------------------------------

    @property
    def head(self) -> Position:
        """The position of the latest change published."""
        return self._head

    def start_at(self, position: Position) -> None:
        """Begin (or begin again, after a gap) at `position`: the ring holds
        nothing before it."""
        self._ring.clear()
        self._floor = self._head = position

    def publish(self, position: Position, record: TaskRecord) -> None:
        """A durable change, at a position after every earlier one."""
        ring = self._ring
        if not ring.maxlen:
            self._floor = position
        else:
            if len(ring) == ring.maxlen:
                self._floor = ring[0][0]
            ring.append((position, record))
        self._head = position
        self.subscriptions.deliver(record)
        readers = self._tenants.get(record.tenant)
        if readers is not None:
            for reader in readers.open:
                if reader.filter.matches(record):
                    reader.deliver(position, record)
            reply_to = record.reply_to
            if reply_to is not None and readers.by_reply:
                replied = readers.by_reply.get(reply_to)
                if replied:
                    for reader in replied:
                        if reader.filter.matches(record):
                            reader.deliver(position, record)
            named = readers.by_id.get(record.id)
            if named:
                for reader in named:
                    # A reader of this reply_to was given the change above.
                    if (reply_to is None or reader.filter.reply_to != reply_to) and (
                        reader.filter.matches(record)
                    ):
                        reader.deliver(position, record)

    def advance(self, position: Position) -> None:
        """A change nobody here reads (a feed without a ring only: a shared
        store reads back from its own history instead)."""
        assert not self._ring.maxlen, "a feed with a ring must publish every change"
        self._head = self._floor = position

    def gap(self, position: Position) -> None:
        """Changes before `position` may have been lost (a shared store's
        history was trimmed while unread): every reader starts over there."""
        self.start_at(position)
        for readers in self._tenants.values():
            for reader in self._all(readers):
                reader.reset(position)

    def read_by_readers(self, task_id: str, reply_to: str | None = None) -> bool:
        """Whether a feed reader here may want a change of `task_id`, made
        to a task with `reply_to` ("" for none, None when not known), so a
        shared store must read the record."""
        for readers in self._tenants.values():
            if readers.open or task_id in readers.by_id:
                return True
            if readers.by_reply and (reply_to is None or reply_to in readers.by_reply):
                return True
        return False

    def subscribe(self, task_id: str) -> LatestSubscription:
        return self.subscriptions.subscribe(task_id)

    def clear(self) -> None:
        self.subscriptions.clear()

    # -- cursors ----------------------------------------------------------

    def cursor(self, position: Position) -> str:
        return f"{self.epoch}.{'.'.join(str(p) for p in position)}"

    def position(self, cursor: str) -> Position:
        epoch, _, rest = cursor.partition(".")
        if epoch != self.epoch or not rest:
            raise BadCursor(cursor)
        try:
            position = tuple(int(p) for p in rest.split("."))
        except ValueError:
            raise BadCursor(cursor) from None
        if len(position) != len(self._head) or any(p < 0 for p in position):
            raise BadCursor(cursor)
        return position

    # -- readers ----------------------------------------------------------

    async def follow(self, feed_filter: FeedFilter, cursor: str | None = None) -> FeedReader:
        """A reader of the changes matching `feed_filter`: those after
        `cursor`, or from now on without one. Its first message is a reset
        when the changes after `cursor` are not all known."""
        reader = FeedReader(self, feed_filter)
        self._attach(reader)
        if cursor is None:
            return reader
        head = self._head
        try:
            after = self.position(cursor)
        except BadCursor:
            reader.reset(head)
            return reader
        if self._floor <= after <= head:
            reader.merge(self._after(after))
        elif self._backfill is None:
            reader.reset(head)  # too old, or a position never published
        else:
            try:
                earlier = await self._backfill(after, head)
            except BaseException:
                reader.close()
                raise
            if earlier is None:
                reader.reset(head)
            else:
                reader.merge(earlier)
        return reader

    def _after(self, after: Position) -> list[tuple[Position, TaskRecord]]:
        """The ring's changes after a position, oldest first: read from the
        newest end, so a reader resuming near the head (a client reopening
        its stream to add tasks) costs what it missed, not the ring."""
        newer: list[tuple[Position, TaskRecord]] = []
        for entry in reversed(self._ring):
            if entry[0] <= after:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    def _attach(self, reader: FeedReader) -> None:
        readers = self._tenants.get(reader.filter.tenant)
        if readers is None:
            readers = self._tenants[reader.filter.tenant] = _Readers()
        feed_filter = reader.filter
        if feed_filter.reply_to:
            readers.by_reply.setdefault(feed_filter.reply_to, set()).add(reader)
        for task_id in feed_filter.ids:
            readers.by_id.setdefault(task_id, set()).add(reader)
        if not feed_filter.reply_to and not feed_filter.ids:
            readers.open.add(reader)
        self.readers += 1

    def _detach(self, reader: FeedReader) -> None:
        tenant = reader.filter.tenant
        readers = self._tenants.get(tenant)
        if readers is None:
            return
        feed_filter = reader.filter
        if feed_filter.reply_to:
            _discard(readers.by_reply, feed_filter.reply_to, reader)
        for task_id in feed_filter.ids:
            _discard(readers.by_id, task_id, reader)
        if not feed_filter.reply_to and not feed_filter.ids:
            readers.open.discard(reader)
        if not readers.open and not readers.by_id and not readers.by_reply:
            del self._tenants[tenant]
        self.readers -= 1

    @staticmethod
    def _all(readers: _Readers) -> set[FeedReader]:
        every = set(readers.open)
        for named in readers.by_id.values():
            every.update(named)
        for replied in readers.by_reply.values():
            every.update(replied)
        return every


def _discard(index: dict[str, set[FeedReader]], key: str, reader: FeedReader) -> None:
    readers = index.get(key)
    if readers is not None:
        readers.discard(reader)
        if not readers:
            del index[key]
