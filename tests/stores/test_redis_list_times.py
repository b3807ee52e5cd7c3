"""RedisStore lists filtered on create time: the bounds hold exactly, and
pages stay full when the tasks that match lie past more tasks than one list
script examines (scripts.LIST_SCAN)."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor_server.stores import ListQuery, State
from conveyor_server.stores.redis.scripts import LIST_SCAN
from tests.stores.conftest import StoreOpener
from tests.support.stores import new_task

pytestmark = pytest.mark.stores("redis")

NOW = 1_700_000_000.0


async def test_created_after_and_before_bound_full_pages(make_store: StoreOpener) -> None:
    store = make_store(max_queue=4 * LIST_SCAN)
    crowd = LIST_SCAN + 100
    await store.create([new_task() for _ in range(crowd)], NOW)
    middle = await store.create([new_task() for _ in range(5)], NOW + 10)
    await store.create([new_task() for _ in range(crowd)], NOW + 20)
    window = ListQuery(page_size=3, created_after=NOW + 10, created_before=NOW + 20)

    first, cursor = await store.list_page(window)
    assert [r.id for r in first] == [r.id for r in reversed(middle)][:3]
    assert cursor is not None
    rest, cursor = await store.list_page(dataclasses.replace(window, before_seq=cursor))
    assert [r.id for r in rest] == [middle[1].id, middle[0].id]
    assert cursor is None

    pending = dataclasses.replace(window, page_size=10, states=frozenset({State.PENDING}))
    assert len((await store.list_page(pending))[0]) == 5
    newest, _ = await store.list_page(ListQuery(page_size=1, created_after=NOW + 20))
    assert newest[0].create_time == NOW + 20
    oldest, _ = await store.list_page(ListQuery(page_size=crowd + 1, created_before=NOW + 10))
    assert len(oldest) == crowd
    assert {r.create_time for r in oldest} == {NOW}
