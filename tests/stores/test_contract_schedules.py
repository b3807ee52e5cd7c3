"""The TaskStore contract on schedule storage, for every store: a schedule
per (tenant, id), listed by id; a replace keeps what only the store sets
(create time, `fired_until`); `fired_until` never goes down."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor_server.stores import ScheduleExists, ScheduleRecord, TaskStore

T0 = 1_700_000_000.0


def schedule(schedule_id: str, tenant: str = "", spec: bytes = b"every 1m") -> ScheduleRecord:
    return ScheduleRecord(
        id=schedule_id,
        tenant=tenant,
        spec=spec,
        paused=False,
        create_time=T0,
        update_time=T0,
        fired_until=T0,
    )


async def test_schedules_are_kept_per_tenant_and_listed_by_id(store: TaskStore) -> None:
    for schedule_id, tenant in [("nightly", "acme"), ("hourly", "acme"), ("nightly", "")]:
        await store.create_schedule(schedule(schedule_id, tenant))
    with pytest.raises(ScheduleExists) as caught:
        await store.create_schedule(schedule("nightly", "acme", b"other"))
    assert caught.value.schedule_id == "nightly"

    assert await store.get_schedule("acme", "nightly") == schedule("nightly", "acme")
    assert await store.get_schedule("globex", "nightly") is None
    assert [s.id for s in await store.list_schedules("acme")] == ["hourly", "nightly"]
    assert await store.list_schedules("") == [schedule("nightly")]
    assert await store.list_schedules("globex") == []
    every = await store.list_schedules()
    assert sorted((s.tenant, s.id) for s in every) == [
        ("", "nightly"),
        ("acme", "hourly"),
        ("acme", "nightly"),
    ]


async def test_replace_keeps_the_create_time_and_fired_until(store: TaskStore) -> None:
    await store.create_schedule(schedule("nightly"))
    await store.advance_schedule("", "nightly", T0 + 60)
    changed = dataclasses.replace(
        schedule("nightly", spec=b"every 2m"),
        paused=True,
        create_time=T0 + 5,
        update_time=T0 + 10,
        fired_until=T0 - 100,
    )
    read = await store.get_schedule("", "nightly")
    assert read is not None
    stored = await store.replace_schedule(changed, read.update_time)
    expected = dataclasses.replace(
        schedule("nightly", spec=b"every 2m"), paused=True, update_time=T0 + 10, fired_until=T0 + 60
    )
    assert stored == expected
    assert await store.get_schedule("", "nightly") == expected
    assert await store.replace_schedule(schedule("no-such-schedule"), T0) is None
    assert await store.get_schedule("", "no-such-schedule") is None


async def test_replace_refuses_a_change_made_from_a_copy_read_before_another(
    store: TaskStore,
) -> None:
    await store.create_schedule(schedule("nightly"))
    read = await store.get_schedule("", "nightly")
    assert read is not None
    paused = dataclasses.replace(read, paused=True, update_time=T0 + 10)
    assert await store.replace_schedule(paused, read.update_time) is not None
    # An update made from the copy read before the pause would undo it.
    updated = dataclasses.replace(read, spec=b"every 2m", update_time=T0 + 11)
    assert await store.replace_schedule(updated, read.update_time) is None
    kept = await store.get_schedule("", "nightly")
    assert kept is not None and kept.paused and kept.spec == read.spec


async def test_fired_until_only_grows(store: TaskStore) -> None:
    await store.create_schedule(schedule("nightly"))
    await store.advance_schedule("", "nightly", T0 + 120)
    await store.advance_schedule("", "nightly", T0 + 60)
    stored = await store.get_schedule("", "nightly")
    assert stored is not None and stored.fired_until == T0 + 120
    # A schedule that is gone stays gone.
    await store.advance_schedule("", "no-such-schedule", T0 + 60)
    assert await store.get_schedule("", "no-such-schedule") is None


async def test_delete_says_whether_it_deleted(store: TaskStore) -> None:
    await store.create_schedule(schedule("nightly", "acme"))
    assert not await store.delete_schedule("", "nightly")
    assert await store.delete_schedule("acme", "nightly")
    assert not await store.delete_schedule("acme", "nightly")
    assert await store.get_schedule("acme", "nightly") is None
    assert await store.list_schedules() == []
    await store.advance_schedule("acme", "nightly", T0 + 60)
    assert await store.get_schedule("acme", "nightly") is None
    # The id is free again.
    await store.create_schedule(schedule("nightly", "acme"))
    assert await store.list_schedules("acme") == [schedule("nightly", "acme")]
