"""Listing, for every store, where its indexes could go wrong: filters that
follow a task through its states, selective filters under many newer tasks,
paging across thousands of tasks, and tasks that retention drops."""

from __future__ import annotations

import time
from typing import Any, Protocol

import pytest

from conveyor_server.stores import ListQuery, Outcome, State, TaskRecord, TaskStore
from tests.support.stores import BOOM, TYPES, ids_of, new_task, value_bytes


class StoreOpener(Protocol):
    def __call__(self, *, short_lease: bool = False, **limits: Any) -> TaskStore: ...


@pytest.fixture
def now() -> float:
    return time.time()


async def all_pages(store: TaskStore, size: int, **query: Any) -> list[str]:
    """Every id a query lists, page after page."""
    seen: list[str] = []
    before: int | None = None
    while True:
        page, before = await store.list_page(ListQuery(page_size=size, before_seq=before, **query))
        seen.extend(record.id for record in page)
        if before is None:
            return seen


async def claim_all(store: TaskStore, count: int, now: float) -> list[TaskRecord]:
    claimed: list[TaskRecord] = []
    while len(claimed) < count:
        more = await store.claim(count - len(claimed), now, TYPES)
        assert more, f"claimed {len(claimed)} of {count}"
        claimed += more
    return claimed


def states(*names: State) -> frozenset[State]:
    return frozenset(names)


async def test_a_state_filter_follows_each_task_through_its_states(
    store: TaskStore, now: float
) -> None:
    records = await store.create([new_task(max_attempts=2) for _ in range(5)], now)
    done, retried, cancelled, running, waiting = (r.id for r in records)
    claimed = await claim_all(store, 4, now)
    claims = {record.id: record.claim for record in claimed}
    await store.complete(
        [
            Outcome(done, claims[done], result=value_bytes("ok")),
            Outcome(retried, claims[retried], failure=BOOM, retry_at=now + 600),
            Outcome(cancelled, claims[cancelled], cancelled=True),
        ],
        now + 1,
    )
    assert await ids_of(store, ListQuery(page_size=10, states=states(State.PENDING))) == [
        waiting,
        retried,
    ]
    assert await ids_of(store, ListQuery(page_size=10, states=states(State.RUNNING))) == [running]
    assert await ids_of(
        store, ListQuery(page_size=10, states=states(State.SUCCEEDED, State.CANCELLED))
    ) == [cancelled, done]

    # Back to PENDING by RetryTask, and out of it by a cancel: each listed
    # under its new state only, in its place by creation.
    await store.retry(cancelled, now + 2)
    await store.cancel(waiting, now + 2)
    assert await ids_of(
        store, ListQuery(page_size=10, states=states(State.PENDING, State.RUNNING))
    ) == [running, cancelled, retried]
    assert await ids_of(store, ListQuery(page_size=10, states=states(State.CANCELLED))) == [waiting]
    assert await ids_of(store, ListQuery(page_size=10, states=states(State.FAILED))) == []


async def test_selective_filters_find_the_oldest_tasks_under_thousands(
    make_store: StoreOpener, now: float
) -> None:
    store = make_store(max_queue=5000, retention_count=5000)
    rare = [r.id for r in await store.create([new_task("sleep") for _ in range(2)], now)]
    labelled = (await store.create([new_task(labels={"team": "rare"})], now))[0].id
    others: list[str] = []
    for offset in range(3):
        batch = await store.create([new_task() for _ in range(900)], now + 1 + offset)
        others += [record.id for record in batch]
    # Finish every third of the others, so that states interleave across
    # the whole range of creation.
    claimed = await claim_all(store, len(others) + 3, now + 10)
    claims = {record.id: record.claim for record in claimed}
    finished = set(others[::3])
    await store.complete(
        [Outcome(i, claims[i], result=value_bytes("ok")) for i in others[::3]], now + 11
    )

    assert await ids_of(store, ListQuery(page_size=10, type="sleep")) == rare[::-1]
    assert await ids_of(store, ListQuery(page_size=10, labels=(("team", "rare"),))) == [labelled]
    newest_first = list(reversed([*rare, labelled, *others]))
    assert await all_pages(store, 250, states=states(State.SUCCEEDED)) == [
        i for i in newest_first if i in finished
    ]
    assert await all_pages(store, 333, states=states(State.RUNNING)) == [
        i for i in newest_first if i not in finished
    ]
    assert await all_pages(store, 1000) == newest_first
    assert await all_pages(store, 400, type="echo", states=states(State.SUCCEEDED)) == [
        i for i in newest_first if i in finished
    ]


async def test_tasks_dropped_by_retention_leave_every_filter(
    make_store: StoreOpener, now: float
) -> None:
    store = make_store(retention_count=2)
    records = await store.create(
        [new_task("sleep", labels={"run": str(n), "team": "a"}) for n in range(4)], now
    )
    ids = [record.id for record in records]
    claimed = await claim_all(store, 4, now)
    claims = {record.id: record.claim for record in claimed}
    for offset, task_id in enumerate(ids, start=1):
        await store.complete(
            [Outcome(task_id, claims[task_id], result=value_bytes("ok"))], now + offset
        )

    kept = [ids[3], ids[2]]
    assert await ids_of(store, ListQuery(page_size=10, type="sleep")) == kept
    assert await ids_of(store, ListQuery(page_size=10, labels=(("team", "a"),))) == kept
    assert await ids_of(store, ListQuery(page_size=10, states=states(State.SUCCEEDED))) == kept
    assert await ids_of(store, ListQuery(page_size=10, labels=(("run", "0"),))) == []
    assert await ids_of(store, ListQuery(page_size=10, labels=(("run", "3"),))) == [ids[3]]
    # A new task with the label of a dropped one is listed alone.
    [again] = await store.create([new_task("sleep", labels={"run": "0"})], now + 10)
    assert await ids_of(store, ListQuery(page_size=10, labels=(("run", "0"),))) == [again.id]
