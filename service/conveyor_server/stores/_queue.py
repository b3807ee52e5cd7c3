"""The due-task queue of a store of one process (memory, SQLite): per task
type, a fair queue (`_fair`) of the tasks due now, behind the type's limits
(`_limits`); delayed tasks in a heap by due time."""

from __future__ import annotations

import heapq
from collections.abc import Collection

from conveyor_server.stores._fair import FairQueue
from conveyor_server.stores._limits import TypeGate
from conveyor_server.stores._records import State, TaskRecord, TypeLimits

_DelayedEntry = tuple[float, int, int, TaskRecord]


class DueQueue:
    """Pending tasks: those due now in a fair queue per type, delayed ones
    in a heap by due time; and the limits of every type.

    Nothing is ever removed from the middle: a task that leaves PENDING, or
    is queued again, leaves a stale entry that is skipped when reached.
    """

    __slots__ = ("_delayed", "_gates", "_rated", "_ticket", "_types")

    def __init__(self) -> None:
        self._types: dict[str, FairQueue] = {}
        self._gates: dict[str, TypeGate] = {}
        # The gates of the types with a token bucket.
        self._rated: dict[str, TypeGate] = {}
        self._delayed: list[_DelayedEntry] = []
        self._ticket = 0

    def gate(self, task_type: str) -> TypeGate:
        """The limits and counts of a type."""
        gate = self._gates.get(task_type)
        if gate is None:
            gate = self._gates[task_type] = TypeGate(task_type)
        return gate

    def gates(self) -> list[TypeGate]:
        return list(self._gates.values())

    def push(self, record: TaskRecord, now: float) -> None:
        """Queue a PENDING record as it is now, due at its scheduled time."""
        if record.scheduled_time > now:
            heapq.heappush(
                self._delayed, (record.scheduled_time, record.seq, record.version, record)
            )
        else:
            self._make_ready(record, record.version)

    def pop_due(self, limit: int, now: float, types: Collection[str]) -> list[TaskRecord]:
        """Up to `limit` records of `types` due at `now` that their limits
        let start, highest priority first, then in fair turns (see `_fair`),
        across types in the order their next tasks became due. They leave
        the queue and count as started."""
        self._promote_due(now)
        queues = [q for t in types if (q := self._types.get(t)) is not None]
        due: list[TaskRecord] = []
        if len(queues) == 1:
            [only] = queues
            gate = only.gate
            if gate.open:  # the common case: nothing to check between tasks
                while len(due) < limit and only.head() is not None:
                    due.append(only.pop())
                gate.started_all(due)
                return due
            while len(due) < limit and gate.admits(now) and only.head() is not None:
                record = only.pop()
                gate.started(record, now)
                due.append(record)
            return due
        while len(due) < limit:
            best: tuple[tuple[int, int], FairQueue] | None = None
            for queue in queues:
                if not queue.gate.admits(now):
                    continue
                head = queue.head()
                if head is not None and (best is None or head < best[0]):
                    best = head, queue
            if best is None:
                break
            record = best[1].pop()
            best[1].gate.started(record, now)
            due.append(record)
        return due

    def started(self, record: TaskRecord) -> None:
        """Count a task loaded RUNNING as it was (it takes no token)."""
        self.gate(record.type).started(record, None)

    def stopped(self, record: TaskRecord) -> bool:
        """A task left RUNNING. Returns whether that frees a limit that
        held due tasks back (a place of its type or of its key)."""
        gate = self._gates[record.type]
        if gate.open and record.concurrency_key is None:
            gate.running -= 1
            return False
        was_full, key_slot = gate.stopped(record)
        if key_slot is None:
            return was_full
        queue = self._types.get(record.type)
        unparked = queue is not None and queue.unpark(key_slot)
        return was_full or unparked

    def configure(self, task_type: str, limits: TypeLimits, paused: bool) -> None:
        """New limits or pause of a type; keys held back get another look."""
        gate = self.gate(task_type)
        gate.configure(limits, paused)
        if limits.max_starts_per_second:
            self._rated[task_type] = gate
        else:
            self._rated.pop(task_type, None)
        queue = self._types.get(task_type)
        if queue is not None:
            queue.unpark_all()

    def next_due_time(self) -> float | None:
        """When the earliest delayed task becomes due, or a type with due
        tasks held back only by its token bucket gets its next token."""
        delayed = self._delayed
        earliest: float | None = None
        while delayed:
            _, _, version, record = delayed[0]
            if record.state is State.PENDING and record.version == version:
                earliest = record.scheduled_time
                break
            heapq.heappop(delayed)
        for gate in self._rated.values():
            token = gate.next_token_time()
            queue = self._types.get(gate.type)
            if token is not None and queue is not None and queue.has_due():
                earliest = token if earliest is None else min(earliest, token)
        return earliest

    def _make_ready(self, record: TaskRecord, version: int) -> None:
        queue = self._types.get(record.type)
        if queue is None:
            queue = self._types[record.type] = FairQueue(self.gate(record.type))
        self._ticket += 1
        queue.push((self._ticket, version, record))

    def _promote_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, version, record = heapq.heappop(delayed)
            if record.state is State.PENDING and record.version == version:
                self._make_ready(record, version)
