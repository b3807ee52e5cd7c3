"""BatchCancelTasks and BatchRetryTasks: the tasks a request names, by ids
or by a filter, and what CancelTask or RetryTask does to each.

A filter is followed page by page to its end, so memory stays bounded
however many tasks match; each page's tasks are changed together (one store
call each, in flight at once) before the next page is read. Pages follow
the store's creation order, so a task changed on one page is never met
again on a later one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._validation import check_created, check_id, check_states
from conveyor_server.stores import (
    CancelOutcome,
    InvalidTransition,
    ListQuery,
    QueueFull,
    State,
    TaskRecord,
    TaskStore,
)

MAX_IDS = 1000
# Tasks read, then changed at once, per step of a filter.
PAGE_SIZE = 500

CANCELLABLE = frozenset({State.PENDING, State.RUNNING})
RETRYABLE = frozenset({State.FAILED, State.CANCELLED})

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Targets:
    """The tasks a batch request names: its ids (in order, each once), or
    the query of its filter (None when the filter can match nothing)."""

    ids: tuple[str, ...] = ()
    query: ListQuery | None = None


def targets(
    ids: Sequence[str],
    has_filter: bool,
    task_filter: pb.TaskFilter,
    tenant: str,
    actionable: frozenset[State],
) -> Targets:
    """What a batch request names; INVALID_ARGUMENT unless it gives exactly
    one of ids (at most MAX_IDS) and filter. The filter's states are
    narrowed to the `actionable` ones (the others are left alone anyway)."""
    if bool(ids) == has_filter:
        raise invalid_argument(
            [
                (
                    "filter" if ids else "ids",
                    "give either the ids of the tasks or a filter, not both"
                    if ids
                    else "give the ids of the tasks, or a filter (an empty filter is every task)",
                )
            ]
        )
    if ids:
        if len(ids) > MAX_IDS:
            raise invalid_argument(
                [("ids", f"holds {len(ids)} ids; give at most {MAX_IDS}, or a filter")]
            )
        for index, task_id in enumerate(ids):
            check_id(task_id, f"ids[{index}]")
        return Targets(ids=tuple(dict.fromkeys(ids)))
    states = check_states(task_filter.states, "filter.states")
    after, before = check_created(task_filter, "filter.")
    wanted = actionable & states if states else actionable
    if not wanted:
        return Targets()
    return Targets(
        query=ListQuery(
            page_size=PAGE_SIZE,
            states=wanted,
            type=task_filter.type,
            labels=tuple(sorted(task_filter.labels.items())),
            tenant=tenant,
            created_after=after,
            created_before=before,
        )
    )


class BatchActions:
    """BatchCancelTasks and BatchRetryTasks on one store. `refusal` maps a
    store error to the caller's status; `cancelled` hears of each PENDING
    task cancelled (a running one's end is its runner's to report)."""

    def __init__(
        self,
        store: TaskStore,
        refusal: Callable[[Exception], ServiceError],
        cancelled: Callable[[TaskRecord], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._refusal = refusal
        self._cancelled = cancelled
        self._clock = clock

    async def cancel(
        self, request: pb.BatchCancelTasksRequest, tenant: str
    ) -> pb.BatchCancelTasksResponse:
        found = targets(
            request.ids, request.HasField("filter"), request.filter, tenant, CANCELLABLE
        )
        response = pb.BatchCancelTasksResponse()
        async for chunk in self._chunks(found):
            now = self._clock()
            outcomes = await _each(self._store.cancel(task_id, now, tenant) for task_id in chunk)
            for outcome in outcomes:
                if isinstance(outcome, InvalidTransition):
                    response.matched += 1  # finished: left alone
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif outcome is None:
                    # By id: no such task. By filter: dropped since it was listed.
                    response.not_found += 1 if found.ids else 0
                else:
                    response.matched += 1
                    if outcome.outcome is CancelOutcome.CANCELLED:
                        response.cancelled += 1
                        self._cancelled(outcome.record)
                    elif outcome.outcome is CancelOutcome.REQUESTED:
                        response.cancel_requested += 1
        return response

    async def retry(
        self, request: pb.BatchRetryTasksRequest, tenant: str
    ) -> pb.BatchRetryTasksResponse:
        found = targets(request.ids, request.HasField("filter"), request.filter, tenant, RETRYABLE)
        response = pb.BatchRetryTasksResponse()
        async for chunk in self._chunks(found):
            now = self._clock()
            outcomes = await _each(self._store.retry(task_id, now, tenant) for task_id in chunk)
            full: QueueFull | None = None
            for outcome in outcomes:
                if isinstance(outcome, QueueFull):
                    full = outcome
                elif isinstance(outcome, InvalidTransition):
                    response.matched += 1  # not FAILED or CANCELLED: left alone
                elif isinstance(outcome, BaseException):
                    raise outcome
                elif outcome is None:
                    response.not_found += 1 if found.ids else 0
                else:
                    response.matched += 1
                    response.retried += 1
            if full is not None:
                refused = self._refusal(full)
                raise ServiceError(
                    refused.code,
                    f"{refused.message}. {response.retried} tasks were retried before the "
                    "queue filled; the rest were left alone",
                )
        return response

    async def _chunks(self, found: Targets) -> AsyncIterator[list[str]]:
        """The ids of the tasks found, a page at a time."""
        for start in range(0, len(found.ids), PAGE_SIZE):
            yield list(found.ids[start : start + PAGE_SIZE])
        if found.query is not None:
            async for page in pages(self._store, found.query):
                yield [record.id for record in page]


async def pages(store: TaskStore, query: ListQuery) -> AsyncIterator[list[TaskRecord]]:
    """Every task `query` matches, a page at a time, to the end."""
    while True:
        records, cursor = await store.list_page(query)
        if records:
            yield records
        if cursor is None:
            return
        query = dataclasses.replace(query, before_seq=cursor)


# Store calls of one batch action in flight at once: enough to hide a
# network store's round trips, few enough not to take a connection each
# from the store's pool (a page of 1,000 at once opened 1,000 to Redis).
IN_FLIGHT = 16


async def _each(calls: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Every call, at most IN_FLIGHT at a time; per call, in order, what it
    returned or raised."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
