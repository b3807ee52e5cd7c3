"""GET /v1/stats: counts by state and type, queue depth, and throughput.

Throughput is what this process saw end: the runner's finished attempts and
the pending tasks cancelled here, per tenant, in one-minute buckets over the
last hour, kept in memory. On a shared store each process counts its own, so
an API replica that runs no tasks (`--workers 0`) counts only cancels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from conveyor.v1 import task_pb2
from conveyor_server.stores import ListQuery, State, TaskRecord, TaskStore

BUCKET_SECONDS = 60
BUCKETS = 60
# Counting reads the tenant's newest tasks a page at a time; past this many
# the counts are of the newest ones only, and say so.
MAX_COUNTED = 10_000
_PAGE = 1000
_STATE_NAMES = {
    state: task_pb2.TaskState.Name(task_pb2.TaskState.ValueType(state.value)) for state in State
}


class Throughput:
    """Tasks that ended per minute, per tenant: a `TaskObserver` that
    records only endings."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Per tenant: minute number -> tasks ended in that minute.
        self._minutes: dict[str, dict[int, int]] = {}

    def _count(self, tenant: str, now: float) -> None:
        minute = int(now // BUCKET_SECONDS)
        counts = self._minutes.setdefault(tenant, {})
        counts[minute] = counts.get(minute, 0) + 1
        if len(counts) > BUCKETS + 1:
            # Memory stays bounded: forget minutes older than the window.
            for old in [m for m in counts if m <= minute - BUCKETS]:
                del counts[old]

    def series(self, tenant: str, now: float | None = None) -> tuple[int, list[int]]:
        """The start of the oldest bucket and the counts, oldest first; the
        last bucket is the current, partial minute."""
        current = int((self._clock() if now is None else now) // BUCKET_SECONDS)
        first = current - BUCKETS + 1
        counts = self._minutes.get(tenant, {})
        return first * BUCKET_SECONDS, [counts.get(m, 0) for m in range(first, current + 1)]

    # -- TaskObserver ---------------------------------------------------

    def tasks_submitted(self, records: Sequence[TaskRecord], now: float) -> None:
        pass

    def tasks_started(self, records: Sequence[TaskRecord], now: float) -> None:
        pass

    def attempts_ended(self, records: Sequence[TaskRecord], now: float) -> None:
        for record in records:
            if record.state.is_terminal:
                self._count(record.tenant, now)

    def task_cancelled(self, record: TaskRecord) -> None:
        self._count(record.tenant, self._clock())

    def rpc_handled(self, method: str, code: str, seconds: float | None) -> None:
        pass

    def http_handled(self, route: str, status: int, seconds: float | None) -> None:
        pass


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def task_stats(store: TaskStore, throughput: Throughput, tenant: str) -> dict[str, Any]:
    """The stats of one tenant's tasks, as the JSON object /v1/stats returns."""
    by_state = dict.fromkeys(_STATE_NAMES.values(), 0)
    by_type: dict[str, dict[str, int]] = {}
    counted = 0
    query = ListQuery(page_size=_PAGE, tenant=tenant)
    complete = False
    while counted < MAX_COUNTED:
        records, cursor = await store.list_page(query)
        for record in records:
            name = _STATE_NAMES[record.state]
            by_state[name] += 1
            per_type = by_type.setdefault(record.type, dict.fromkeys(_STATE_NAMES.values(), 0))
            per_type[name] += 1
        counted += len(records)
        if cursor is None:
            complete = True
            break
        query = ListQuery(page_size=_PAGE, tenant=tenant, before_seq=cursor)
    unfinished = by_state["TASK_STATE_PENDING"] + by_state["TASK_STATE_RUNNING"]
    # Without tenants the store counts every unfinished task itself, beyond
    # the newest MAX_COUNTED; a tenant's depth is its own tasks'.
    depth = await store.depth() if tenant == "" else unfinished
    start, finished = throughput.series(tenant)
    return {
        "counts": by_state,
        "types": dict(sorted(by_type.items())),
        "counted": counted,
        "complete": complete,
        "queue_depth": depth,
        "throughput": {
            "start_time": _timestamp(start),
            "bucket_seconds": BUCKET_SECONDS,
            "finished": finished,
        },
    }
