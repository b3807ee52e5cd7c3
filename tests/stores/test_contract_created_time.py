"""The TaskStore contract on listing by creation time, for every store:
`created_after` (inclusive) and `created_before` (exclusive) keep pages
newest first and full."""

from __future__ import annotations

import time

import pytest

from conveyor_server.stores import ListQuery, State, TaskStore
from tests.support.stores import TYPES, ids_of, new_task


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


async def test_created_after_and_before_bound_the_list(store: TaskStore, now: float) -> None:
    ids = [(await store.create([new_task(), new_task()], now + i)) for i in range(5)]
    by_second = [[r.id for r in pair] for pair in ids]
    newest_first = [task_id for pair in reversed(by_second) for task_id in reversed(pair)]

    query = ListQuery(page_size=100, created_after=now + 1, created_before=now + 4)
    assert await ids_of(store, query) == newest_first[2:8]
    after = ListQuery(page_size=100, created_after=now + 3)
    assert await ids_of(store, after) == newest_first[:4]
    before = ListQuery(page_size=100, created_before=now + 1)
    assert await ids_of(store, before) == newest_first[8:]
    assert await ids_of(store, ListQuery(page_size=100, created_after=now + 5)) == []

    # Pages stay full, and the cursor goes on from the last.
    seen: list[str] = []
    cursor: int | None = None
    while True:
        page, cursor = await store.list_page(
            ListQuery(page_size=4, before_seq=cursor, created_after=now + 1, created_before=now + 4)
        )
        seen += [r.id for r in page]
        if cursor is None:
            break
        assert len(page) == 4
    assert seen == newest_first[2:8]


async def test_created_bounds_combine_with_other_filters(store: TaskStore, now: float) -> None:
    old, _ = await store.create([new_task(), new_task("sleep")], now)
    young, young_sleep = await store.create([new_task(), new_task("sleep")], now + 10)
    await store.claim(1, now + 10, TYPES)  # the old echo task runs
    query = ListQuery(page_size=10, type="echo", created_after=now + 5)
    assert await ids_of(store, query) == [young.id]
    running_old = ListQuery(page_size=10, states=frozenset({State.RUNNING}), created_before=now + 5)
    assert await ids_of(store, running_old) == [old.id]
    assert await ids_of(store, ListQuery(page_size=10, type="sleep", created_before=now)) == []
    assert young_sleep.id in await ids_of(store, ListQuery(page_size=10, created_after=now + 10))
