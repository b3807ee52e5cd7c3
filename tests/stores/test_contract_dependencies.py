"""The TaskStore contract on dependencies, for every store: a task created
with `depends_on` (ids) or `depends_on_requests` (earlier tasks of the same
call) waits, PENDING and not claimable, until every one of them has ended;
a dependency that ends FAILED or CANCELLED cancels it (and its own
dependents) unless it runs on dependency failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor_server.stores import (
    CancelOutcome,
    ErrorCode,
    FeedFilter,
    Outcome,
    State,
    TaskFailure,
    TaskStore,
    UnknownDependency,
)
from tests.stores.conftest import StoreOpener
from tests.support.stores import (
    BOOM,
    NOTICE_SECONDS,
    TYPES,
    current,
    new_task,
    next_change,
    value_bytes,
)


@pytest.fixture
def now() -> float:
    return time.time()


def dependency_failed(task_id: str, state: State) -> TaskFailure:
    return TaskFailure(
        ErrorCode.DEPENDENCY_FAILED, f"task {task_id} it depends on ended {state.name}"
    )


async def claim_ids(store: TaskStore, now: float) -> list[str]:
    return [r.id for r in await store.claim(100, now, TYPES)]


async def succeed(store: TaskStore, task_id: str, now: float) -> None:
    record = await current(store, task_id)
    assert record.state is State.RUNNING, record
    [ended] = await store.complete([Outcome(task_id, record.claim, result=b"")], now)
    assert ended.state is State.SUCCEEDED


async def test_a_chain_runs_one_after_another(store: TaskStore, now: float) -> None:
    first, second, third = await store.create(
        [new_task(), new_task(depends_on_requests=(0,)), new_task(depends_on_requests=(1,))],
        now,
    )
    a, b, c = first.id, second.id, third.id
    assert (first.depends_on, first.waiting) == (None, 0)
    assert (second.depends_on, second.waiting, second.state) == ((a,), 1, State.PENDING)
    assert (third.depends_on, third.waiting) == ((b,), 1)
    assert await store.depth() == 3

    assert await claim_ids(store, now) == [a]
    assert await claim_ids(store, now) == []
    subscription = store.subscribe(b)
    try:
        await succeed(store, a, now + 1)
        # Released: a change of its own, due now.
        released = await next_change(subscription)
        assert (released.id, released.state, released.waiting) == (b, State.PENDING, 0)
        assert released.version == 2
    finally:
        subscription.close()
    assert await claim_ids(store, now + 1) == [b]
    await succeed(store, b, now + 2)
    assert await claim_ids(store, now + 2) == [c]


async def test_fan_in_waits_for_every_dependency(store: TaskStore, now: float) -> None:
    [earlier] = await store.create([new_task()], now)
    one, two, joined = await store.create(
        [new_task(), new_task(), new_task(depends_on=(earlier.id,), depends_on_requests=(0, 1))],
        now,
    )
    parts = [earlier.id, one.id, two.id]
    assert set(joined.depends_on or ()) == set(parts)
    assert joined.waiting == 3
    joined_id = joined.id

    assert sorted(await claim_ids(store, now)) == sorted(parts)
    for offset, part in enumerate(parts[:2], start=1):
        await succeed(store, part, now + offset)
        assert (await current(store, joined_id)).waiting == 3 - offset
        assert await claim_ids(store, now + offset) == []
    await succeed(store, parts[2], now + 3)
    assert await claim_ids(store, now + 3) == [joined_id]


async def test_a_failed_dependency_cancels_its_dependents_in_cascade(
    store: TaskStore, now: float
) -> None:
    created = await store.create(
        [
            new_task(max_attempts=2),
            new_task(depends_on_requests=(0,)),
            new_task(depends_on_requests=(1,)),
            new_task(depends_on_requests=(0,), run_on_dependency_failure=True),
        ],
        now,
    )
    root, child, grandchild, tolerant = (r.id for r in created)

    # A failure with a retry to come is no end: nothing is cancelled.
    assert await claim_ids(store, now) == [root]
    await store.complete([Outcome(root, 1, failure=BOOM, retry_at=now)], now)
    assert (await current(store, child)).state is State.PENDING
    assert await claim_ids(store, now) == [root]
    await store.complete([Outcome(root, 2, failure=BOOM)], now + 1)

    for task_id, cause in [(child, root), (grandchild, child)]:
        record = await current(store, task_id)
        assert record.state is State.CANCELLED
        cause_state = State.FAILED if cause == root else State.CANCELLED
        assert record.error == dependency_failed(cause, cause_state)
        assert record.end_time == pytest.approx(now + 1, abs=1e-3)
    # The one that runs on dependency failure runs.
    assert (await current(store, tolerant)).waiting == 0
    assert await claim_ids(store, now + 1) == [tolerant]
    assert await store.depth() == 1


async def test_cancelling_a_dependency_or_a_waiting_task_cascades(
    store: TaskStore, now: float
) -> None:
    created = await store.create(
        [
            new_task(),
            new_task(depends_on_requests=(0,)),
            new_task(depends_on_requests=(1,)),
            new_task(),
            new_task(depends_on_requests=(3,)),
        ],
        now,
    )
    a, b, c, d, e = (r.id for r in created)
    # A waiting task is cancelled as any pending one, and its dependents go too.
    cancelled = await store.cancel(b, now + 1)
    assert cancelled is not None and cancelled.outcome is CancelOutcome.CANCELLED
    assert cancelled.record.error is None
    assert (await current(store, c)).error == dependency_failed(b, State.CANCELLED)
    # Its own dependency is not touched, and its end changes nothing now.
    assert await claim_ids(store, now + 1) == [a, d]
    await succeed(store, a, now + 2)
    assert (await current(store, b)).state is State.CANCELLED

    # A running dependency cancelled: its dependent goes when it ends.
    await store.cancel(d, now + 3)
    assert (await current(store, e)).state is State.PENDING
    await store.complete([Outcome(d, 1, cancelled=True)], now + 4)
    assert (await current(store, e)).error == dependency_failed(d, State.CANCELLED)
    assert await store.depth() == 0


async def test_a_long_chain_cancels_in_one_call(make_store: StoreOpener, now: float) -> None:
    store = make_store(max_queue=2000, retention_count=2000)
    chain = [new_task()] + [new_task(depends_on_requests=(i,)) for i in range(1499)]
    ids = [r.id for r in await store.create(chain, now)]
    await store.cancel(ids[0], now + 1)
    last = await current(store, ids[-1])
    assert last.error == dependency_failed(ids[-2], State.CANCELLED)
    assert await store.depth() == 0


async def test_an_unknown_dependency_refuses_the_whole_call(store: TaskStore, now: float) -> None:
    [mine] = await store.create([new_task(tenant="acme")], now)
    with pytest.raises(UnknownDependency) as caught:
        await store.create(
            [
                new_task(tenant="acme"),
                new_task(tenant="acme", depends_on=(mine.id, "no-such-task")),
            ],
            now,
        )
    assert (caught.value.index, caught.value.position, caught.value.task_id) == (
        1,
        1,
        "no-such-task",
    )
    # Another tenant's task is no task of this one.
    with pytest.raises(UnknownDependency) as caught:
        await store.create([new_task(tenant="globex", depends_on=(mine.id,))], now)
    assert (caught.value.index, caught.value.position) == (0, 0)
    assert await store.depth() == 1


async def test_a_dependency_already_ended_counts_at_once(store: TaskStore, now: float) -> None:
    good, bad = await store.create([new_task(), new_task()], now)
    await store.claim(2, now, TYPES)
    await store.complete(
        [Outcome(good.id, 1, result=value_bytes("ok")), Outcome(bad.id, 1, failure=BOOM)],
        now + 1,
    )
    reader = await store.follow(FeedFilter(states=frozenset({State.CANCELLED})))
    try:
        after_good, after_bad, tolerant = await store.create(
            [
                new_task(depends_on=(good.id,)),
                new_task(depends_on=(bad.id,)),
                new_task(depends_on=(bad.id,), run_on_dependency_failure=True),
            ],
            now + 2,
        )
        # Created CANCELLED: one version, one change.
        assert (after_bad.state, after_bad.version) == (State.CANCELLED, 1)
        assert after_bad.error == dependency_failed(bad.id, State.FAILED)
        change = await asyncio.wait_for(reader.next(), NOTICE_SECONDS)
        assert change.record is not None
        assert (change.record.id, change.record.version) == (after_bad.id, 1)
    finally:
        reader.close()
    assert (after_good.state, after_good.waiting) == (State.PENDING, 0)
    assert tolerant.waiting == 0
    assert sorted(await claim_ids(store, now + 2)) == sorted([after_good.id, tolerant.id])


async def test_an_idempotent_repeat_adds_no_dependency(store: TaskStore, now: float) -> None:
    first, dependent = await store.create(
        [new_task(), new_task(key="k", depends_on_requests=(0,))], now
    )
    other, repeat = await store.create(
        [new_task(), new_task(key="k", depends_on_requests=(0,))], now + 1
    )
    assert repeat.id == dependent.id
    dependent_id = dependent.id
    # The repeat's request named `other`; the task waits only for `first`.
    await store.cancel(other.id, now + 2)
    assert (await current(store, dependent_id)).state is State.PENDING
    assert await claim_ids(store, now + 2) == [first.id]
    await succeed(store, first.id, now + 3)
    assert await claim_ids(store, now + 3) == [dependent_id]


async def test_retry_queues_a_dependent_at_once(store: TaskStore, now: float) -> None:
    root, child, waiting = await store.create(
        [new_task(), new_task(depends_on_requests=(0,)), new_task(depends_on_requests=(0,))],
        now,
    )
    root_id, child_id, waiting_id = root.id, child.id, waiting.id
    assert await claim_ids(store, now) == [root_id]
    await store.complete([Outcome(root_id, 1, failure=BOOM)], now + 1)
    assert (await current(store, child_id)).state is State.CANCELLED

    retried = await store.retry(child_id, now + 2)
    assert retried is not None
    assert (retried.state, retried.waiting, retried.error) == (State.PENDING, 0, None)
    assert await claim_ids(store, now + 2) == [child_id]

    # A task cancelled while it waited runs at once too, its dependency unfinished.
    await store.retry(root_id, now + 3)
    [late] = await store.create([new_task(depends_on=(root_id,))], now + 3)
    late_id = late.id
    assert late.waiting == 1
    await store.cancel(late_id, now + 3)
    await store.retry(late_id, now + 4)
    assert await claim_ids(store, now + 4) == [root_id, late_id]
    assert (await current(store, waiting_id)).state is State.CANCELLED


async def test_a_released_task_keeps_its_delay(store: TaskStore, now: float) -> None:
    first, delayed = await store.create(
        [new_task(), new_task(delay=60.0, depends_on_requests=(0,))], now
    )
    await store.claim(1, now, TYPES)
    await succeed(store, first.id, now + 1)
    assert await claim_ids(store, now + 1) == []
    assert await store.next_due_time() == pytest.approx(now + 60, abs=1e-3)
    assert await claim_ids(store, now + 61) == [delayed.id]
