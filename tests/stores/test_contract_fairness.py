"""The TaskStore contract on fair claims, for every store: within one
priority of one type, due tasks are taken in turn across tenants (the one
served least recently first), then across the concurrency keys of a tenant,
then in the order they became due; so one tenant's flood delays another
tenant's single task by a bounded number of claims."""

from __future__ import annotations

import time

import pytest

from conveyor_server.stores import NewTask, TaskStore
from tests.stores.conftest import StoreOpener
from tests.support.stores import TYPES, new_task


@pytest.fixture
def now() -> float:
    return time.time()


async def one_by_one(store: TaskStore, now: float, count: int) -> list[str]:
    """Ids of the next `count` tasks, claimed one at a time."""
    ids: list[str] = []
    for _ in range(count):
        ids += [r.id for r in await store.claim(1, now, TYPES)]
    return ids


async def create_ids(store: TaskStore, tasks: list[NewTask], now: float) -> list[str]:
    return [r.id for r in await store.create(tasks, now)]


async def test_tenants_take_turns(store: TaskStore, now: float) -> None:
    a = await create_ids(store, [new_task(tenant="a") for _ in range(3)], now)
    b = await create_ids(store, [new_task(tenant="b") for _ in range(2)], now)
    [c] = await create_ids(store, [new_task(tenant="c")], now)
    assert await one_by_one(store, now, 7) == [a[0], b[0], c, a[1], b[1], a[2]]


async def test_a_tenant_with_no_due_task_joins_at_the_back(store: TaskStore, now: float) -> None:
    a = await create_ids(store, [new_task(tenant="a") for _ in range(2)], now)
    b = await create_ids(store, [new_task(tenant="b") for _ in range(2)], now)
    assert await one_by_one(store, now, 1) == [a[0]]
    # b was served less recently than a; c joins behind both.
    [c] = await create_ids(store, [new_task(tenant="c")], now)
    assert await one_by_one(store, now, 2) == [b[0], a[1]]
    # a has nothing due now: its next task joins behind c and b.
    [a_again] = await create_ids(store, [new_task(tenant="a")], now)
    assert await one_by_one(store, now, 4) == [c, b[1], a_again]


async def test_keys_of_a_tenant_take_turns_each_in_order(store: TaskStore, now: float) -> None:
    first = await create_ids(store, [new_task(concurrency_key="k1") for _ in range(3)], now)
    [second] = await create_ids(store, [new_task(concurrency_key="k2")], now)
    [unkeyed] = await create_ids(store, [new_task()], now)
    assert await one_by_one(store, now, 6) == [first[0], second, unkeyed, first[1], first[2]]


async def test_priority_comes_before_turns(store: TaskStore, now: float) -> None:
    low = await create_ids(store, [new_task(tenant="b")], now)
    high = await create_ids(store, [new_task(tenant="a", priority=5) for _ in range(2)], now)
    assert await one_by_one(store, now, 4) == [*high, *low]


def flood_size(store_url: str) -> int:
    """How many due tasks one tenant holds in the bound tests: 100,000, or
    10,000 on Redis (the same bound, checked in less time)."""
    return 10_000 if store_url.startswith("redis") else 100_000


async def flood(store: TaskStore, now: float, size: int, **fields: str) -> None:
    # One request many times over: a request is only read.
    request = new_task(**fields)
    for start in range(0, size, 5_000):
        await store.create([request] * min(5_000, size - start), now)


# A hundred thousand tasks take seconds to write to SQLite: these two run
# in the full suite, not in the fast lane.
@pytest.mark.slow
async def test_one_task_of_another_tenant_waits_at_most_one_claim(
    make_store: StoreOpener, store_url: str, now: float
) -> None:
    size = flood_size(store_url)
    store = make_store(max_queue=size + 10, retention_count=10)
    await flood(store, now, size, tenant="a")
    [single] = await create_ids(store, [new_task(tenant="b")], now)
    assert single in await one_by_one(store, now, 2)


@pytest.mark.slow
async def test_one_task_of_another_key_waits_at_most_one_claim(
    make_store: StoreOpener, store_url: str, now: float
) -> None:
    size = flood_size(store_url)
    store = make_store(max_queue=size + 10, retention_count=10)
    await flood(store, now, size, tenant="a", concurrency_key="big")
    [single] = await create_ids(store, [new_task(tenant="a", concurrency_key="small")], now)
    assert single in await one_by_one(store, now, 2)
