"""The backlog gauges of a store of one process (memory, SQLite): counted
from its unfinished records when asked, so that no claim or change pays for
them. The cost is one pass over the PENDING and RUNNING tasks, which the
queue bound (max_queue) keeps finite; callers read it about once a second.
"""

from __future__ import annotations

from collections.abc import Iterable

from conveyor_server.stores._records import BacklogGauge, State, TaskRecord


class _Tally:
    __slots__ = ("due", "oldest", "pending", "running")

    def __init__(self) -> None:
        self.pending = self.due = self.running = 0
        self.oldest: float | None = None


def count_backlog(unfinished: Iterable[TaskRecord], now: float) -> list[BacklogGauge]:
    """The gauges per (type, tenant) of these PENDING and RUNNING records,
    sorted by type, then tenant."""
    tallies: dict[tuple[str, str], _Tally] = {}
    for record in unfinished:
        slot = (record.type, record.tenant)
        tally = tallies.get(slot)
        if tally is None:
            tally = tallies[slot] = _Tally()
        if record.state is State.RUNNING:
            tally.running += 1
            continue
        tally.pending += 1
        due_time = record.scheduled_time
        if record.waiting or due_time > now:
            continue
        tally.due += 1
        if tally.oldest is None or due_time < tally.oldest:
            tally.oldest = due_time
    return [
        BacklogGauge(task_type, tenant, t.pending, t.due, t.running, t.oldest)
        for (task_type, tenant), t in sorted(tallies.items())
    ]
