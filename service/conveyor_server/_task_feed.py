"""WatchTasks without a transport: the changes of the tasks matching a
filter, as (cursor, record or reset) items that the gRPC servicer and the
HTTP face's Server-Sent Events both send.

    feed = TaskFeed(store, slots)
    query = watch_query(request, tenant)        # INVALID_ARGUMENT on bad input
    async for item in feed.watch(query):        # RESOURCE_EXHAUSTED over a limit
        item.cursor, item.record (None: reset, re-list), item.current

The snapshots of `current_ids` come first (`current`), then those of
`include_current`, then the changes.

Closing the iterator (`aclose`, or leaving an `async for` early) gives its
watcher slot back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import ServiceError, invalid_argument, listed_task_not_found
from conveyor_server._validation import check_id, check_reply_to
from conveyor_server._watchers import WatcherSlots
from conveyor_server.stores import FeedFilter, ListQuery, State, TaskRecord, TaskStore

MAX_IDS = 1000
MAX_CURSOR_LENGTH = 200
# Tasks read per page for include_current.
CURRENT_PAGE = 500
_UNFINISHED = frozenset({State.PENDING, State.RUNNING})
_STATES = {state.value: state for state in State}


@dataclass(frozen=True, slots=True)
class WatchQuery:
    """A validated WatchTasks request."""

    filter: FeedFilter
    cursor: str | None = None
    include_current: bool = False
    # Sorted, without repeats.
    current_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One message: a task's latest snapshot and the cursor after it; a
    reset (record None: re-list, then carry on); `current` marks a snapshot
    sent for include_current rather than a change."""

    cursor: str
    record: TaskRecord | None
    current: bool = False


def watch_query(request: pb.WatchTasksRequest, tenant: str) -> WatchQuery:
    """Check a WatchTasks request; INVALID_ARGUMENT names each field at fault."""
    violations: list[tuple[str, str]] = []
    states: list[State] = []
    for index, value in enumerate(request.states):
        state = _STATES.get(value)
        if state is None:
            violations.append(
                (
                    f"states[{index}]",
                    f"{value} is not a task state; use TASK_STATE_PENDING, "
                    "_RUNNING, _SUCCEEDED, _FAILED or _CANCELLED",
                )
            )
        else:
            states.append(state)
    if len(request.ids) > MAX_IDS:
        violations.append(("ids", f"has {len(request.ids)} ids; at most {MAX_IDS}"))
    else:
        for index, task_id in enumerate(request.ids):
            try:
                check_id(task_id, f"ids[{index}]")
            except ServiceError as exc:
                violations.extend(exc.violations)
    if len(request.current_ids) > MAX_IDS:
        violations.append(("current_ids", f"has {len(request.current_ids)} ids; at most {MAX_IDS}"))
    else:
        listed = set(request.ids)
        for index, task_id in enumerate(request.current_ids):
            if task_id not in listed:
                violations.append(
                    (f"current_ids[{index}]", f"{task_id!r} is not in ids; list it there too")
                )
    if (problem := check_reply_to(request.reply_to)) is not None:
        violations.append(("reply_to", problem))
    elif request.reply_to and request.include_current:
        # The current tasks of a reply_to would take a scan of the tenant's
        # tasks: no store indexes them by reply_to.
        violations.append(
            (
                "include_current",
                "cannot be combined with reply_to; name the tasks to catch up on "
                "in current_ids (and ids) instead",
            )
        )
    if len(request.cursor) > MAX_CURSOR_LENGTH:
        violations.append(
            ("cursor", "is not a cursor this server gave; pass one from a message, or none")
        )
    if violations:
        raise invalid_argument(violations)
    return WatchQuery(
        filter=FeedFilter(
            tenant=tenant,
            states=frozenset(states),
            type=request.type,
            labels=tuple(sorted(request.labels.items())),
            ids=frozenset(request.ids),
            reply_to=request.reply_to,
        ),
        cursor=request.cursor or None,
        include_current=request.include_current and not request.cursor,
        current_ids=tuple(sorted(set(request.current_ids))),
    )


class TaskFeed:
    """Serves WatchTasks from a store's change feed, counting each open
    stream against the server's watcher limits."""

    def __init__(self, store: TaskStore, slots: WatcherSlots) -> None:
        self._store = store
        self._slots = slots

    async def watch(
        self,
        query: WatchQuery,
        *,
        ready: Callable[[str], Awaitable[None]] | None = None,
        instead: str = "poll with ListTasks",
    ) -> AsyncGenerator[FeedItem, None]:
        """The stream's items. `ready` is awaited once the feed is followed,
        with the cursor it follows from: every change from then on will be
        sent (gRPC sends its response headers then, with that cursor, so a
        client can wait for them before acting, and resume from there)."""
        tenant = query.filter.tenant
        self._slots.take(tenant, instead)
        try:
            # Follow first, then read the current tasks: no change slips
            # between the two (one may come twice, the later is newer).
            reader = await self._store.follow(query.filter, query.cursor)
            try:
                # Read before `ready`, so an unknown id is refused before
                # the stream's headers, as every other refusal is.
                snapshots = await self._snapshots(query)
                # A snapshot carries the cursor resumed from: a stream that
                # drops during them must still replay the changes after it.
                at = query.cursor or reader.start
                if ready is not None:
                    await ready(at)
                for record in snapshots:
                    yield FeedItem(at, record, current=True)
                if query.include_current:
                    async for record in self._current(query.filter):
                        yield FeedItem(reader.start, record, current=True)
                while True:
                    change = await reader.next()
                    yield FeedItem(change.cursor, change.record)
            finally:
                reader.close()
        finally:
            self._slots.give_back(tenant)

    async def _snapshots(self, query: WatchQuery) -> list[TaskRecord]:
        """The current snapshots of `current_ids` that match the filter,
        read concurrently (a store may group them into one round trip).
        NOT_FOUND names the first id that is not the tenant's."""
        if not query.current_ids:
            return []
        feed_filter = query.filter
        records = await asyncio.gather(
            *(self._store.get(task_id, feed_filter.tenant) for task_id in query.current_ids)
        )
        for task_id, record in zip(query.current_ids, records, strict=True):
            if record is None:
                raise listed_task_not_found(task_id)
        return [r for r in records if r is not None and feed_filter.matches(r)]

    async def _current(self, feed_filter: FeedFilter) -> AsyncIterator[TaskRecord]:
        """The matching unfinished tasks, newest first."""
        store = self._store
        states = (feed_filter.states & _UNFINISHED) if feed_filter.states else _UNFINISHED
        if not states:
            return
        if feed_filter.ids:
            for task_id in sorted(feed_filter.ids):
                record = await store.get(task_id, feed_filter.tenant)
                if record is not None and record.state in states and feed_filter.matches(record):
                    yield record
            return
        query = ListQuery(
            page_size=CURRENT_PAGE,
            states=states,
            type=feed_filter.type,
            labels=feed_filter.labels,
            tenant=feed_filter.tenant,
        )
        while True:
            page, after = await store.list_page(query)
            for record in page:
                yield record
            if after is None:
                return
            query = dataclasses.replace(query, before_seq=after)
