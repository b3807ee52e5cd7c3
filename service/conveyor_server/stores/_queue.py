"""The due-task queue of the in-memory store: per task type, priority, then
the order tasks became due."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection

from conveyor_server.stores._records import State, TaskRecord

# Entries carry the record's version at enqueue time: an entry whose version
# no longer matches is stale (the task was cancelled or re-queued since) and
# is skipped. The ticket numbers entries in the order they became due, across
# types, so that a claim over several types keeps that order.
_ReadyEntry = tuple[int, int, TaskRecord]
_DelayedEntry = tuple[float, int, int, TaskRecord]


def _live(entry: _ReadyEntry) -> bool:
    return entry[2].state is State.PENDING and entry[2].version == entry[1]


class _TypeQueue:
    """The due tasks of one type: one FIFO per priority, with a heap of the
    priorities that have one (negated, highest first). O(1) per task at one
    priority, where a single heap of tasks costs O(log n) comparisons of
    tuples."""

    __slots__ = ("priorities", "ready")

    def __init__(self) -> None:
        self.ready: dict[int, deque[_ReadyEntry]] = {}
        self.priorities: list[int] = []

    def push(self, entry: _ReadyEntry) -> None:
        priority = entry[2].priority
        fifo = self.ready.get(priority)
        if fifo is None:
            fifo = self.ready[priority] = deque()
            heapq.heappush(self.priorities, -priority)
        fifo.append(entry)

    def head(self) -> tuple[int, int] | None:
        """(-priority, ticket) of the next live entry, dropping stale ones."""
        ready, priorities = self.ready, self.priorities
        while priorities:
            fifo = ready[-priorities[0]]
            while fifo and not _live(fifo[0]):
                fifo.popleft()
            if fifo:
                return priorities[0], fifo[0][0]
            del ready[-heapq.heappop(priorities)]
        return None

    def pop(self) -> TaskRecord:
        """The head entry's record; call after `head` found one."""
        fifo = self.ready[-self.priorities[0]]
        record = fifo.popleft()[2]
        if not fifo:
            del self.ready[-heapq.heappop(self.priorities)]
        return record


class DueQueue:
    """Pending tasks: those due now in a queue per type, delayed ones in a
    heap by due time.

    Nothing is ever removed from the middle: a task that leaves PENDING, or
    is queued again, leaves a stale entry that is skipped when reached.
    """

    __slots__ = ("_delayed", "_ticket", "_types")

    def __init__(self) -> None:
        self._types: dict[str, _TypeQueue] = {}
        self._delayed: list[_DelayedEntry] = []
        self._ticket = 0

    def push(self, record: TaskRecord, now: float) -> None:
        """Queue a PENDING record as it is now, due at its scheduled time."""
        if record.scheduled_time > now:
            heapq.heappush(
                self._delayed, (record.scheduled_time, record.seq, record.version, record)
            )
        else:
            self._make_ready(record, record.version)

    def pop_due(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        """Up to `limit` records of `types` due at `now`, highest priority
        first, then in the order they became due; they leave the queue."""
        self._promote_due(now)
        queues = [q for t in types if (q := self._types.get(t)) is not None]
        due: list[TaskRecord] = []
        if len(queues) == 1:
            [only] = queues
            while len(due) < limit and only.head() is not None:
                due.append(only.pop())
            return due
        while len(due) < limit:
            best: tuple[tuple[int, int], _TypeQueue] | None = None
            for queue in queues:
                head = queue.head()
                if head is not None and (best is None or head < best[0]):
                    best = head, queue
            if best is None:
                break
            due.append(best[1].pop())
        return due

    def next_due_time(self) -> float | None:
        delayed = self._delayed
        while delayed:
            _, _, version, record = delayed[0]
            if record.state is State.PENDING and record.version == version:
                return record.scheduled_time
            heapq.heappop(delayed)
        return None

    def _make_ready(self, record: TaskRecord, version: int) -> None:
        queue = self._types.get(record.type)
        if queue is None:
            queue = self._types[record.type] = _TypeQueue()
        self._ticket += 1
        queue.push((self._ticket, version, record))

    def _promote_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, version, record = heapq.heappop(delayed)
            if record.state is State.PENDING and record.version == version:
                self._make_ready(record, version)
