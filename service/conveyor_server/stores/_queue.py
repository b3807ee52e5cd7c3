"""The due-task queue of the in-memory store: priority, then age."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator

from conveyor_server.stores._records import State, TaskRecord

# Entries carry the record's version at enqueue time: a popped entry whose
# version no longer matches is stale (the task was cancelled or re-queued
# since) and is skipped.
_ReadyEntry = tuple[int, TaskRecord]
_DelayedEntry = tuple[float, int, int, TaskRecord]


class DueQueue:
    """Pending tasks: those due now in one FIFO per priority, with a heap of
    the priorities that have one (negated, highest first); delayed ones in a
    heap by due time. O(1) per task at one priority, where a single heap of
    tasks costs O(log n) comparisons of tuples.

    Nothing is ever removed from the middle: a task that leaves PENDING, or
    is queued again, leaves a stale entry that is skipped when reached.
    """

    __slots__ = ("_delayed", "_priorities", "_ready")

    def __init__(self) -> None:
        self._ready: dict[int, deque[_ReadyEntry]] = {}
        self._priorities: list[int] = []
        self._delayed: list[_DelayedEntry] = []

    def push(self, record: TaskRecord, now: float) -> None:
        """Queue a PENDING record as it is now, due at its scheduled time."""
        if record.scheduled_time > now:
            heapq.heappush(
                self._delayed, (record.scheduled_time, record.seq, record.version, record)
            )
        else:
            self._make_ready(record, record.version)

    def pop_due(self, limit: int, now: float) -> list[TaskRecord]:
        """Up to `limit` records due at `now`, highest priority first, then
        in the order they became due; they leave the queue."""
        self._promote_due(now)
        due: list[TaskRecord] = []
        ready = self._ready
        priorities = self._priorities
        while priorities and len(due) < limit:
            fifo = ready[-priorities[0]]
            version, record = fifo.popleft()
            if not fifo:
                del ready[-heapq.heappop(priorities)]
            if record.state is State.PENDING and record.version == version:
                due.append(record)
        return due

    def next_due_time(self) -> float | None:
        delayed = self._delayed
        while delayed:
            _, _, version, record = delayed[0]
            if record.state is State.PENDING and record.version == version:
                return record.scheduled_time
            heapq.heappop(delayed)
        return None

    def pending(self) -> Iterator[TaskRecord]:
        """The queued records, in no order; one may come twice."""
        for fifo in self._ready.values():
            yield from (e[1] for e in fifo if e[1].state is State.PENDING)
        yield from (e[3] for e in self._delayed if e[3].state is State.PENDING)

    def _make_ready(self, record: TaskRecord, version: int) -> None:
        fifo = self._ready.get(record.priority)
        if fifo is None:
            fifo = self._ready[record.priority] = deque()
            heapq.heappush(self._priorities, -record.priority)
        fifo.append((version, record))

    def _promote_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, version, record = heapq.heappop(delayed)
            if record.state is State.PENDING and record.version == version:
                self._make_ready(record, version)
