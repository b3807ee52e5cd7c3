"""The TaskStore contract on task types and workers, for every store: a
claim takes only the types it names, without losing the order across them,
and workers register, refresh and expire."""

from __future__ import annotations

import dataclasses
import time

import pytest

from conveyor_server.stores import (
    ErrorCode,
    Outcome,
    State,
    TaskFailure,
    TaskRecord,
    TaskStore,
    TaskTypeInfo,
    WorkerInfo,
)
from tests.support.stores import current, new_task


@pytest.fixture
def now() -> float:
    return time.time()


def ids(records: list[TaskRecord]) -> list[str]:
    return [r.id for r in records]


# -- claims by type ---------------------------------------------------------------


async def test_claim_takes_only_the_types_it_names(store: TaskStore, now: float) -> None:
    gpu, cpu, other = await store.create(
        [new_task("gpu_infer"), new_task("cpu_resize"), new_task("render")], now
    )
    gpu_id, cpu_id, other_id = gpu.id, cpu.id, other.id

    assert ids(await store.claim(10, now, ["cpu_resize"])) == [cpu_id]
    assert await store.claim(10, now, ["cpu_resize"]) == []
    assert await store.claim(10, now, []) == []
    assert ids(await store.claim(10, now, ["gpu_infer", "nothing_queued"])) == [gpu_id]
    # Unclaimed, the task of a type nobody claimed waits, and counts.
    assert (await current(store, other_id)).state is State.PENDING
    assert await store.depth() == 3
    assert ids(await store.claim(10, now, ["render"])) == [other_id]


async def test_a_claim_over_several_types_keeps_priority_then_queue_order(
    store: TaskStore, now: float
) -> None:
    plan = [("a", 0), ("b", 0), ("a", 5), ("c", 0), ("b", 5), ("a", 0)]
    created = []
    for offset, (task_type, priority) in enumerate(plan):
        [record] = await store.create([new_task(task_type, priority=priority)], now + offset / 100)
        created.append(record.id)
    a0, b0, a5, c0, b5, a0_later = created

    assert ids(await store.claim(3, now + 1, ["a", "b"])) == [a5, b5, a0]
    assert ids(await store.claim(10, now + 1, ["b", "a"])) == [b0, a0_later]
    assert ids(await store.claim(10, now + 1, ["a", "b", "c"])) == [c0]


async def test_a_delayed_task_becomes_due_in_its_own_type(store: TaskStore, now: float) -> None:
    [delayed] = await store.create([new_task("report", delay=30.0)], now)
    delayed_id = delayed.id
    assert await store.next_due_time() == pytest.approx(now + 30, abs=1e-3)

    assert await store.claim(10, now + 31, ["email"]) == []
    assert await store.depth() == 1
    assert ids(await store.claim(10, now + 31, ["email", "report"])) == [delayed_id]


async def test_cancelled_and_retried_tasks_leave_and_rejoin_their_type(
    store: TaskStore, now: float
) -> None:
    pending, failing = await store.create([new_task("report"), new_task("report")], now)
    pending_id, failing_id = pending.id, failing.id
    await store.cancel(pending_id, now)
    [claimed] = await store.claim(10, now, ["report"])
    assert claimed.id == failing_id
    await store.complete(
        [Outcome(failing_id, 1, failure=TaskFailure(ErrorCode.HANDLER_ERROR, "boom"))], now
    )
    assert await store.depth() == 0

    await store.retry(failing_id, now + 1)
    await store.retry(pending_id, now + 1)
    assert await store.claim(10, now + 1, ["email"]) == []
    assert ids(await store.claim(10, now + 1, ["report"])) == [failing_id, pending_id]


async def test_a_requeued_attempt_goes_back_to_its_type(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task("report")], now)
    task_id = task.id
    [claimed] = await store.claim(1, now, ["report"])
    assert await store.requeue(task_id, claimed.attempt, now + 1) is not None
    assert await store.claim(10, now + 1, ["email"]) == []
    [again] = await store.claim(10, now + 1, ["report"])
    assert (again.id, again.attempt) == (task_id, 1)


# -- workers ------------------------------------------------------------------------


def worker(worker_id: str, now: float, *types: str, running: int = 0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=4242,
        types=tuple(TaskTypeInfo(t, f"does {t}", '{"n":1}') for t in types),
        threads=4,
        running=running,
        started=now,
        heartbeat=now,
        ttl=15.0,
    )


async def test_workers_register_refresh_and_unregister(store: TaskStore, now: float) -> None:
    assert await store.live_workers(now) == []
    gpu = worker("gpu-1", now, "gpu_infer")
    cpu = worker("cpu-1", now + 1, "cpu_resize", "thumbnail")
    await store.register_worker(cpu)
    await store.register_worker(gpu)

    assert await store.live_workers(now + 2) == [gpu, cpu]  # oldest first

    refreshed = dataclasses.replace(cpu, running=3, heartbeat=now + 10)
    await store.register_worker(refreshed)
    assert await store.live_workers(now + 11) == [gpu, refreshed]

    await store.unregister_worker("gpu-1")
    await store.unregister_worker("no-such-worker")
    assert await store.live_workers(now + 11) == [refreshed]


async def test_a_worker_not_refreshed_within_its_ttl_is_dead(store: TaskStore, now: float) -> None:
    await store.register_worker(worker("old", now, "a"))
    await store.register_worker(worker("young", now + 10, "a"))

    assert [w.id for w in await store.live_workers(now + 14.9)] == ["old", "young"]
    assert [w.id for w in await store.live_workers(now + 15.1)] == ["young"]
    # Dead is dead: a later read does not bring it back.
    assert [w.id for w in await store.live_workers(now + 1)] == ["young"]


@pytest.mark.stores("redis")
async def test_workers_registered_by_one_process_are_seen_by_another(
    store: TaskStore, second_store: TaskStore, now: float
) -> None:
    await store.register_worker(worker("gpu-1", now, "gpu_infer"))
    [seen] = await second_store.live_workers(now + 1)
    assert seen == worker("gpu-1", now, "gpu_infer")
