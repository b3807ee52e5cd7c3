"""Contract: `TaskStore.backlog`, the gauges autoscalers read, on every store."""

from __future__ import annotations

import time

import pytest

from conveyor_server.stores import BacklogGauge, Outcome, TaskStore
from tests.support.stores import new_task


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


async def gauges(store: TaskStore, now: float) -> dict[tuple[str, str], BacklogGauge]:
    return {(g.type, g.tenant): g for g in await store.backlog(now)}


async def test_an_empty_store_has_no_backlog(store: TaskStore, now: float) -> None:
    assert await store.backlog(now) == []


async def test_backlog_counts_per_type_and_tenant(store: TaskStore, now: float) -> None:
    first, _, _ = await store.create(
        [
            new_task(tenant="a"),
            new_task(tenant="a", delay=60.0),
            new_task(tenant="a", depends_on_requests=(0,)),
        ],
        now,
    )
    await store.create([new_task(tenant="a")], now + 2)
    await store.create([new_task("sleep", tenant="b"), new_task(tenant="b")], now + 3)
    [claimed] = await store.claim(1, now + 4, ["echo"])
    assert claimed.id == first.id

    # a/echo: one due since now + 2, one delayed, one waiting for the
    # running one; b: one of each type, due since now + 3.
    assert await gauges(store, now + 5) == {
        ("echo", "a"): BacklogGauge("echo", "a", 3, 1, 1, now + 2),
        ("echo", "b"): BacklogGauge("echo", "b", 1, 1, 0, now + 3),
        ("sleep", "b"): BacklogGauge("sleep", "b", 1, 1, 0, now + 3),
    }


async def test_a_delayed_task_counts_as_due_once_its_time_came(
    store: TaskStore, now: float
) -> None:
    """Even before any claim looked at it: a type no worker serves yet is
    the one an autoscaler must see."""
    await store.create([new_task(delay=60.0)], now)
    assert await gauges(store, now + 1) == {("echo", ""): BacklogGauge("echo", "", 1, 0, 0)}
    assert await gauges(store, now + 70) == {
        ("echo", ""): BacklogGauge("echo", "", 1, 1, 0, now + 60)
    }


async def test_tasks_held_back_by_a_key_limit_are_still_due(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_running_per_key": 1})
    await store.create([new_task(concurrency_key="k"), new_task(concurrency_key="k")], now)
    assert len(await store.claim(10, now + 1, ["echo"])) == 1
    # The key is at its limit: the claim parked it, with one task due.
    assert await store.claim(10, now + 1, ["echo"]) == []
    assert await gauges(store, now + 2) == {("echo", ""): BacklogGauge("echo", "", 1, 1, 1, now)}


async def test_finished_tasks_leave_the_backlog(store: TaskStore, now: float) -> None:
    await store.create([new_task(), new_task()], now)
    first, second = await store.claim(2, now + 1, ["echo"])
    await store.complete([Outcome(first.id, first.claim, result=b"")], now + 2)
    assert await gauges(store, now + 3) == {("echo", ""): BacklogGauge("echo", "", 0, 0, 1)}
    await store.cancel(second.id, now + 3)
    await store.complete([Outcome(second.id, second.claim, cancelled=True)], now + 4)
    assert await store.backlog(now + 5) == []
