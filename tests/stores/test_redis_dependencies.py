"""RedisStore dependencies: `depends_on` as the claim rules describe it,
across processes (two RedisStore instances on one prefix), and task hashes
written before dependencies existed."""

from __future__ import annotations

import time

import pytest
import redis

from conveyor_server.stores import (
    ErrorCode,
    NewTask,
    Outcome,
    QueueFull,
    State,
    TaskRecord,
    TaskStore,
    UnknownDependency,
)
from tests.stores.conftest import StoreOpener
from tests.support.stores import (
    BOOM,
    TYPES,
    RecordingListener,
    current,
    eventually,
    new_task,
    value_bytes,
)

pytestmark = pytest.mark.stores("redis")


@pytest.fixture
def now() -> float:
    return time.time()


def dependent(
    *,
    on: tuple[str, ...] = (),
    requests: tuple[int, ...] = (),
    run_on_failure: bool = False,
    delay: float = 0.0,
    tenant: str = "",
    key: str | None = None,
) -> NewTask:
    task = new_task(delay=delay, tenant=tenant, key=key)
    task.depends_on = on
    task.depends_on_requests = requests
    task.run_on_dependency_failure = run_on_failure
    return task


async def run_to_end(store: TaskStore, now: float, *, succeed: bool = True) -> TaskRecord:
    """Claim the one due task and end it: SUCCEEDED, or FAILED for good."""
    [claimed] = await store.claim(1, now, TYPES)
    if succeed:
        outcome = Outcome(claimed.id, claimed.claim, result=value_bytes("ok"))
    else:
        outcome = Outcome(claimed.id, claimed.claim, failure=BOOM)
    [ended] = await store.complete([outcome], now)
    return ended


async def test_a_dependent_waits_unqueued_until_its_dependency_succeeds(
    store: TaskStore, now: float
) -> None:
    [first] = await store.create([new_task()], now)
    [second] = await store.create([dependent(on=(first.id,))], now)
    assert (second.state, second.waiting, second.depends_on) == (State.PENDING, 1, (first.id,))
    assert await store.depth() == 2

    ended = await run_to_end(store, now)
    assert ended.id == first.id
    released = await current(store, second.id)
    assert (released.state, released.waiting, released.version) == (State.PENDING, 0, 2)
    [claimed] = await store.claim(5, now, TYPES)
    assert claimed.id == second.id


async def test_indexes_resolve_to_the_tasks_of_the_same_call(store: TaskStore, now: float) -> None:
    first, second, third = await store.create(
        [new_task(), dependent(requests=(0,)), dependent(requests=(0, 1))], now
    )
    assert second.depends_on == (first.id,)
    assert third.depends_on == (first.id, second.id)
    assert (second.waiting, third.waiting) == (1, 2)
    assert [c.id for c in await store.claim(5, now, TYPES)] == [first.id]


async def test_an_index_to_an_idempotent_repeat_names_the_existing_task(
    store: TaskStore, now: float
) -> None:
    [existing] = await store.create([new_task(key="k")], now)
    repeat, waiting = await store.create([new_task(key="k"), dependent(requests=(0,))], now)
    assert repeat.id == existing.id
    assert waiting.depends_on == (existing.id,)


async def test_a_failure_cancels_the_chain_in_one_call(store: TaskStore, now: float) -> None:
    first, second, third = await store.create(
        [new_task(), dependent(requests=(0,)), dependent(requests=(1,))], now
    )
    await run_to_end(store, now, succeed=False)
    for task, cause, ended_as in ((second, first, "FAILED"), (third, second, "CANCELLED")):
        record = await current(store, task.id)
        assert record.state is State.CANCELLED
        assert record.error is not None
        assert record.error.code == ErrorCode.DEPENDENCY_FAILED
        assert record.error.message == f"task {cause.id} it depends on ended {ended_as}"
    assert await store.depth() == 0


async def test_a_dependent_that_runs_on_failure_is_released(store: TaskStore, now: float) -> None:
    _, second = await store.create([new_task(), dependent(requests=(0,), run_on_failure=True)], now)
    await run_to_end(store, now, succeed=False)
    [claimed] = await store.claim(5, now, TYPES)
    assert claimed.id == second.id


async def test_cancelling_a_waiting_task_cancels_its_dependents(
    store: TaskStore, now: float
) -> None:
    _, second, third = await store.create(
        [new_task(), dependent(requests=(0,)), dependent(requests=(1,))], now
    )
    cancellation = await store.cancel(second.id, now)
    assert cancellation is not None and cancellation.record.state is State.CANCELLED
    assert (await current(store, third.id)).state is State.CANCELLED
    assert await store.depth() == 1
    await run_to_end(store, now)
    assert await store.claim(5, now, TYPES) == []


async def test_a_retried_dependent_is_queued_at_once(store: TaskStore, now: float) -> None:
    first, second = await store.create([new_task(), dependent(requests=(0,))], now)
    await store.cancel(second.id, now)
    retried = await store.retry(second.id, now)
    assert retried is not None and (retried.state, retried.waiting) == (State.PENDING, 0)
    claimed = await store.claim(5, now, TYPES)
    assert {c.id for c in claimed} == {first.id, second.id}
    # Its dependency ending now leaves it alone.
    [done] = await store.complete(
        [Outcome(c.id, c.claim, result=value_bytes("ok")) for c in claimed if c.id == first.id],
        now,
    )
    assert done.id == first.id
    assert (await current(store, second.id)).state is State.RUNNING


async def test_a_dependency_finished_before_create_counts_at_once(
    store: TaskStore, now: float
) -> None:
    [succeeded] = await store.create([new_task()], now)
    await run_to_end(store, now)
    [failed] = await store.create([new_task()], now)
    await run_to_end(store, now, succeed=False)

    [ready] = await store.create([dependent(on=(succeeded.id,))], now)
    assert (ready.state, ready.waiting) == (State.PENDING, 0)
    [cancelled] = await store.create([dependent(on=(succeeded.id, failed.id))], now)
    assert (cancelled.state, cancelled.version) == (State.CANCELLED, 1)
    assert cancelled.error is not None
    assert cancelled.error.message == f"task {failed.id} it depends on ended FAILED"
    assert (await current(store, cancelled.id)).state is State.CANCELLED
    [claimed] = await store.claim(5, now, TYPES)
    assert claimed.id == ready.id


async def test_a_released_task_is_due_at_its_scheduled_time(store: TaskStore, now: float) -> None:
    _, later = await store.create([new_task(), dependent(requests=(0,), delay=60)], now)
    await run_to_end(store, now)
    assert await store.claim(5, now, TYPES) == []
    assert await store.next_due_time() == pytest.approx(later.scheduled_time)
    [claimed] = await store.claim(5, now + 61, TYPES)
    assert claimed.id == later.id


async def test_an_unknown_dependency_creates_nothing(store: TaskStore, now: float) -> None:
    [theirs] = await store.create([new_task(tenant="other")], now)
    [mine] = await store.create([new_task()], now)
    with pytest.raises(UnknownDependency) as raised:
        await store.create([new_task(), dependent(on=(mine.id, theirs.id))], now)
    assert (raised.value.index, raised.value.position, raised.value.task_id) == (1, 1, theirs.id)
    with pytest.raises(UnknownDependency):
        await store.create([dependent(on=("no-such-task",))], now)
    assert await store.depth() == 2


async def test_waiting_tasks_count_toward_the_queue_limit(
    make_store: StoreOpener, now: float
) -> None:
    store = make_store(max_queue=2)
    await store.create([new_task(), dependent(requests=(0,))], now)
    with pytest.raises(QueueFull):
        await store.create([new_task()], now)


async def test_a_dependency_another_process_completes_releases_the_task(
    store: TaskStore, second_store: TaskStore, now: float
) -> None:
    listener = RecordingListener()
    store.attach(listener)
    _, second = await store.create([new_task(), dependent(requests=(0,))], now)
    told = listener.work
    await run_to_end(second_store, now)
    # Word of the released task reaches the first process.
    await eventually(lambda: listener.work > told, "work announced")
    [claimed] = await store.claim(5, now, TYPES)
    assert claimed.id == second.id


async def test_hashes_without_the_new_fields_read_as_no_dependencies(
    store: TaskStore, redis_url: str, now: float
) -> None:
    [task] = await store.create([new_task()], now)
    prefix = redis_url.split("prefix=")[1]
    client = redis.Redis.from_url(redis_url.split("?")[0])
    try:
        fields = ("concurrency_key", "depends_on", "waiting", "run_on_dependency_failure")
        client.hdel(f"{prefix}:task:{task.id}", *fields)
    finally:
        client.close()
    record = await current(store, task.id)
    assert (record.depends_on, record.waiting, record.run_on_dependency_failure) == (None, 0, False)
    assert record.concurrency_key is None
    [claimed] = await store.claim(1, now, TYPES)
    assert claimed.id == task.id


async def test_the_concurrency_key_is_kept(store: TaskStore, now: float) -> None:
    task = new_task()
    task.concurrency_key = "acme"
    [created] = await store.create([task], now)
    assert (await current(store, created.id)).concurrency_key == "acme"
