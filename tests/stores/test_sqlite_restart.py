"""What a restart of `sqlite:///path` brings back beyond each task's row:
the settings of task types and the schedules, and the tasks waiting for
dependencies, which wait again for those unfinished (and are cancelled when
an interrupted last attempt of one fails it at start-up)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor_server.stores import (
    ErrorCode,
    Outcome,
    ScheduleRecord,
    SqliteStore,
    State,
    TaskFailure,
    TypeLimits,
)
from tests.support.stores import TYPES, current, new_task

T0 = 1_700_000_000.0


class Reopener:
    """One database file, opened again and again as restarts would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: SqliteStore | None = None

    async def open(self) -> SqliteStore:
        if self.store is not None:
            await self.store.close()
        self.store = SqliteStore(str(self.path), max_queue=100, retention_count=100)
        return self.store


@pytest.fixture
async def reopen(tmp_path: Path) -> AsyncIterator[Reopener]:
    opener = Reopener(tmp_path / "tasks.db")
    yield opener
    if opener.store is not None:
        await opener.store.close()


async def test_type_settings_and_schedules_survive_a_restart(reopen: Reopener) -> None:
    store = await reopen.open()
    await store.declare_type_defaults({"echo": TypeLimits(max_running=2, burst=4)}, T0)
    await store.update_type("echo", T0 + 1, limits={"max_starts_per_second": 1.5}, paused=True)
    nightly = ScheduleRecord("nightly", "acme", b"spec", False, T0, T0, T0)
    await store.create_schedule(nightly)
    await store.create_schedule(ScheduleRecord("gone", "acme", b"spec", False, T0, T0, T0))
    await store.advance_schedule("acme", "nightly", T0 + 60)
    await store.delete_schedule("acme", "gone")
    settings = await store.type_settings()
    schedules = await store.list_schedules()
    await store.create([new_task()], T0)

    store = await reopen.open()
    assert await store.type_settings() == settings
    assert await store.list_schedules() == schedules
    assert [(s.id, s.fired_until) for s in schedules] == [("nightly", T0 + 60)]
    # In force at once: the type is paused.
    assert await store.claim(10, T0 + 2, TYPES) == []
    await store.update_type("echo", T0 + 3, paused=False)
    assert len(await store.claim(10, T0 + 3, TYPES)) == 1


async def test_waiting_tasks_wait_again_after_a_restart(reopen: Reopener) -> None:
    store = await reopen.open()
    first, second, joined, chained = await store.create(
        [
            new_task(max_attempts=2),
            new_task(max_attempts=2),
            new_task(max_attempts=2, depends_on_requests=(0, 1)),
            new_task(depends_on_requests=(2,)),
        ],
        T0,
    )
    ids = [first.id, second.id]
    await store.claim(2, T0, TYPES)
    await store.complete([Outcome(first.id, 1, result=b"")], T0 + 1)

    store = await reopen.open()
    assert (await current(store, joined.id)).waiting == 1
    assert (await current(store, chained.id)).waiting == 1
    # The interrupted second runs again, and its end releases the rest.
    assert [r.id for r in await store.claim(10, T0 + 2, TYPES)] == [ids[1]]
    await store.complete([Outcome(ids[1], 2, result=b"")], T0 + 3)
    assert [r.id for r in await store.claim(10, T0 + 3, TYPES)] == [joined.id]

    store = await reopen.open()
    released = await current(store, chained.id)
    assert (released.state, released.waiting) == (State.PENDING, 1)
    assert [r.id for r in await store.claim(10, T0 + 4, TYPES)] == [joined.id]
    await store.complete([Outcome(joined.id, 2, result=b"")], T0 + 5)
    assert [r.id for r in await store.claim(10, T0 + 5, TYPES)] == [chained.id]


async def test_a_dependency_failed_at_start_up_cancels_its_dependents(
    reopen: Reopener,
) -> None:
    store = await reopen.open()
    root, child, grandchild, tolerant = await store.create(
        [
            new_task(max_attempts=1),
            new_task(depends_on_requests=(0,)),
            new_task(depends_on_requests=(1,)),
            new_task(depends_on_requests=(0,), run_on_dependency_failure=True),
        ],
        T0,
    )
    await store.claim(1, T0, TYPES)

    # The last attempt of the root was interrupted: it fails, and so the
    # tasks waiting for it are cancelled, on disk too.
    for _ in range(2):
        store = await reopen.open()
        assert (await current(store, root.id)).state is State.FAILED
        for task_id, cause, state in [(child, root, "FAILED"), (grandchild, child, "CANCELLED")]:
            record = await current(store, task_id.id)
            assert record.state is State.CANCELLED
            assert record.error == TaskFailure(
                ErrorCode.DEPENDENCY_FAILED, f"task {cause.id} it depends on ended {state}"
            )
        assert (await current(store, tolerant.id)).waiting == 0
    assert [r.id for r in await store.claim(10, T0 + 1, TYPES)] == [tolerant.id]
