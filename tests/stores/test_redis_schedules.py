"""Schedule storage in RedisStore beyond the shared contract: specs of any
bytes, tenants whose names begin alike, and one set of schedules shared by
every process on the prefix (two RedisStore instances stand for two
processes)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from conveyor_server.stores import ScheduleExists, ScheduleRecord, TaskStore

pytestmark = pytest.mark.stores("redis")

NOW = 1_700_000_000.25


def schedule(
    schedule_id: str = "nightly", tenant: str = "", *, spec: bytes = b"\x00spec\xff"
) -> ScheduleRecord:
    return ScheduleRecord(
        id=schedule_id,
        tenant=tenant,
        spec=spec,
        paused=False,
        create_time=NOW,
        update_time=NOW,
        fired_until=NOW - 0.5,
    )


async def test_a_schedule_reads_back_byte_for_byte(store: TaskStore) -> None:
    stored = dataclasses.replace(schedule(), paused=True)
    await store.create_schedule(stored)
    assert await store.get_schedule("", "nightly") == stored
    assert await store.get_schedule("other", "nightly") is None
    assert await store.get_schedule("", "hourly") is None


async def test_lists_are_by_tenant_then_id(store: TaskStore) -> None:
    for tenant, schedule_id in (("b", "x"), ("a", "z"), ("ab", "a"), ("a", "y"), ("", "q")):
        await store.create_schedule(schedule(schedule_id, tenant))
    everything = [(s.tenant, s.id) for s in await store.list_schedules()]
    assert everything == [("", "q"), ("a", "y"), ("a", "z"), ("ab", "a"), ("b", "x")]
    assert [s.id for s in await store.list_schedules("a")] == ["y", "z"]
    assert [s.id for s in await store.list_schedules("")] == ["q"]
    assert await store.list_schedules("c") == []


async def test_every_process_shares_the_schedules(
    store: TaskStore, second_store: TaskStore
) -> None:
    await store.create_schedule(schedule())
    with pytest.raises(ScheduleExists):
        await second_store.create_schedule(schedule())
    # Processes firing the same schedule at once: the greatest time stays.
    times = [NOW + step for step in (5, 1, 9, 3, 7, 2)]
    await asyncio.gather(
        *(
            (store if i % 2 else second_store).advance_schedule("", "nightly", fired_until)
            for i, fired_until in enumerate(times)
        )
    )
    found = await store.get_schedule("", "nightly")
    assert found is not None and found.fired_until == NOW + 9
    assert await second_store.delete_schedule("", "nightly") is True
    assert await store.get_schedule("", "nightly") is None
