"""Latest-only subscriptions to one task's changes, and the hub of a store's
watchers that every store hands changes to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from conveyor_server.stores._records import TaskRecord


class LatestSubscription:
    """Latest-only mailbox for one watcher of one task: the subscription
    every store hands out, fed by its store on the event loop.

    Holds at most one record and, while its reader waits, one future: a
    watcher costs a few hundred bytes here, which matters at tens of
    thousands of streams.
    """

    __slots__ = ("_closed", "_hub", "_latest", "_waiter", "task_id")

    def __init__(self, hub: Subscriptions, task_id: str) -> None:
        self._hub = hub
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
            self._hub._unsubscribe(self)


class _Watch:
    """The subscriptions of one task, and the newest version they were given."""

    __slots__ = ("subscriptions", "version")

    def __init__(self) -> None:
        self.subscriptions: set[LatestSubscription] = set()
        self.version = 0


class Subscriptions:
    """The watchers of one store, by task id.

    A store hands every change it wants watchers to see to `deliver`; only
    a version newer than the last one delivered for that task goes out, so
    a change that arrives twice (a store's own change and its echo from
    another process) reaches each watcher once.
    """

    __slots__ = ("_watches",)

    def __init__(self) -> None:
        self._watches: dict[str, _Watch] = {}

    def subscribe(self, task_id: str) -> LatestSubscription:
        subscription = LatestSubscription(self, task_id)
        watch = self._watches.get(task_id)
        if watch is None:
            watch = self._watches[task_id] = _Watch()
        watch.subscriptions.add(subscription)
        return subscription

    def deliver(self, record: TaskRecord) -> None:
        watch = self._watches.get(record.id)
        if watch is not None and record.version > watch.version:
            watch.version = record.version
            for subscription in watch.subscriptions:
                subscription.deliver(record)

    def watching(self, task_id: str) -> bool:
        return task_id in self._watches

    def behind(self, task_id: str, version: int) -> bool:
        """Whether the watchers of `task_id` have not seen `version` yet."""
        watch = self._watches.get(task_id)
        return watch is not None and version > watch.version

    def __iter__(self) -> Iterator[str]:
        """The ids of the watched tasks."""
        return iter(self._watches)

    def __bool__(self) -> bool:
        return bool(self._watches)

    def clear(self) -> None:
        self._watches.clear()

    def _unsubscribe(self, subscription: LatestSubscription) -> None:
        watch = self._watches.get(subscription.task_id)
        if watch is not None:
            watch.subscriptions.discard(subscription)
            if not watch.subscriptions:
                del self._watches[subscription.task_id]
