"""The TaskStore contract, asserted through the protocol alone, for every store.

Times are `now` values the tests choose, so delays, backoff, purges and
leases are checked without sleeping. Records a store returns may be live
objects it keeps changing, so each is checked right after the call that
returned it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import pytest

from conveyor_server.stores import (
    CancelOutcome,
    ErrorCode,
    IdempotencyConflict,
    InvalidTransition,
    ListQuery,
    Outcome,
    Progress,
    QueueFull,
    State,
    TaskStore,
)
from tests.support.stores import (
    BOOM,
    TYPES,
    RecordingListener,
    current,
    eventually,
    ids_of,
    new_task,
    next_change,
    struct_bytes,
    value_bytes,
)


class StoreOpener(Protocol):
    """The `make_store` fixture: opens stores on the test's URL."""

    def __call__(self, *, short_lease: bool = False, **limits: Any) -> TaskStore: ...

    async def close(self, store: TaskStore) -> None: ...


@pytest.fixture
def now() -> float:
    return time.time()


# -- create ---------------------------------------------------------------


async def test_create_returns_pending_records_in_order(store: TaskStore, now: float) -> None:
    records = await store.create(
        [
            new_task(
                "echo",
                payload=struct_bytes(word="hi"),
                labels={"team": "data"},
                max_attempts=3,
                priority=7,
                timeout=2.5,
                key="k-1",
            ),
            new_task("echo", delay=30.0),
        ],
        now,
    )
    first, delayed = records
    assert first.id != delayed.id
    assert first.seq < delayed.seq
    for record in records:
        assert (record.state, record.version, record.attempt) == (State.PENDING, 1, 0)
        assert record.create_time == pytest.approx(now, abs=1e-3)

    stored = await current(store, first.id)
    assert stored.type == "echo"
    assert stored.payload == struct_bytes(word="hi")
    assert stored.labels == {"team": "data"}
    assert (stored.max_attempts, stored.priority, stored.timeout) == (3, 7, 2.5)
    assert stored.idempotency_key == "k-1"
    assert stored.scheduled_time == pytest.approx(now, abs=1e-3)
    assert (stored.state, stored.version, stored.attempt) == (State.PENDING, 1, 0)
    assert stored.result is None and stored.error is None
    assert stored.start_time is None and stored.end_time is None
    assert not stored.cancel_requested
    assert (await current(store, delayed.id)).scheduled_time == pytest.approx(now + 30, abs=1e-3)

    [later] = await store.create([new_task()], now + 1)
    assert later.seq > delayed.seq
    assert await store.get("no-such-task") is None


async def test_idempotent_repeat_returns_the_same_task(store: TaskStore, now: float) -> None:
    [first] = await store.create([new_task(key="k")], now)
    first_id, first_seq = first.id, first.seq
    [again] = await store.create([new_task(key="k")], now + 1)
    assert (again.id, again.seq, again.version) == (first_id, first_seq, 1)
    # A repeat inside one batch is the same task too.
    one, two = await store.create([new_task(key="b"), new_task(key="b")], now + 2)
    assert one.id == two.id
    assert await store.depth() == 2

    # Still the same task once it has finished.
    await store.claim(10, now + 3, TYPES)
    await store.complete([Outcome(first_id, 1, result=value_bytes("ok"))], now + 4)
    [repeat] = await store.create([new_task(key="k")], now + 5)
    assert (repeat.id, repeat.state) == (first_id, State.SUCCEEDED)


async def test_idempotency_conflict_in_the_batch_creates_nothing(
    store: TaskStore, now: float
) -> None:
    with pytest.raises(IdempotencyConflict) as caught:
        await store.create(
            [new_task(key="k"), new_task(), new_task(key="k", request="second")], now
        )
    assert (caught.value.key, caught.value.task_id) == ("k", None)
    assert await store.depth() == 0
    assert await ids_of(store, ListQuery(page_size=10)) == []
    # The key was not taken by the refused batch.
    [task] = await store.create([new_task(key="k", request="second")], now)
    assert task.state is State.PENDING


async def test_idempotency_conflict_with_an_earlier_task_creates_nothing(
    store: TaskStore, now: float
) -> None:
    [earlier] = await store.create([new_task(key="k")], now)
    earlier_id = earlier.id
    with pytest.raises(IdempotencyConflict) as caught:
        await store.create([new_task(), new_task(key="k", request="second")], now + 1)
    assert (caught.value.key, caught.value.task_id) == ("k", earlier_id)
    assert await store.depth() == 1
    assert await ids_of(store, ListQuery(page_size=10)) == [earlier_id]


async def test_idempotency_keys_are_per_tenant(store: TaskStore, now: float) -> None:
    [mine] = await store.create([new_task(key="k", tenant="acme")], now)
    mine_id = mine.id
    [theirs] = await store.create([new_task(key="k", request="other", tenant="globex")], now)
    assert theirs.id != mine_id
    [repeat] = await store.create([new_task(key="k", tenant="acme")], now)
    assert repeat.id == mine_id
    with pytest.raises(IdempotencyConflict):
        await store.create([new_task(key="k", request="other", tenant="acme")], now)


async def test_queue_full_counts_only_new_tasks(make_store: StoreOpener, now: float) -> None:
    store = make_store(max_queue=3)
    await store.create([new_task(key="a"), new_task()], now)
    # One new task and a repeat: 3 unfinished, within the limit.
    await store.create([new_task(key="a"), new_task(key="c")], now)
    assert await store.depth() == 3
    # Repeats alone are accepted even when the queue is full.
    [repeat] = await store.create([new_task(key="c")], now)
    assert repeat.idempotency_key == "c"
    with pytest.raises(QueueFull) as caught:
        await store.create([new_task(key="a"), new_task()], now)
    assert (caught.value.depth, caught.value.limit) == (3, 3)
    assert await store.depth() == 3

    # A finished task frees its place; a batch that does not fit is refused whole.
    [running] = await store.claim(1, now, TYPES)
    await store.complete([Outcome(running.id, 1, result=value_bytes("ok"))], now)
    with pytest.raises(QueueFull):
        await store.create([new_task(), new_task()], now)
    assert await store.depth() == 2
    await store.create([new_task()], now)
    assert await store.depth() == 3


async def test_tasks_of_another_tenant_are_invisible(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(tenant="acme")], now)
    task_id = task.id
    assert (await current(store, task_id, "acme")).id == task_id
    assert await store.get(task_id) is None
    assert await store.get(task_id, "globex") is None
    assert await store.cancel(task_id, now, "globex") is None
    assert await store.retry(task_id, now, "globex") is None
    assert (await current(store, task_id, "acme")).state is State.PENDING


# -- claim ----------------------------------------------------------------


async def test_claim_takes_priority_first_then_age(store: TaskStore, now: float) -> None:
    created = []
    for offset, priority in enumerate([0, 5, 0, 5, -1]):
        [record] = await store.create([new_task(priority=priority)], now + offset * 0.01)
        created.append(record.id)
    low_old, high_old, low_new, high_new, lowest = created

    claimed = await store.claim(2, now + 1, TYPES)
    assert [r.id for r in claimed] == [high_old, high_new]
    for record in claimed:
        assert (record.state, record.attempt, record.version) == (State.RUNNING, 1, 2)
        assert record.start_time == pytest.approx(now + 1, abs=1e-3)
    assert [r.id for r in await store.claim(10, now + 1, TYPES)] == [low_old, low_new, lowest]
    assert await store.claim(10, now + 1, TYPES) == []
    assert (await current(store, high_old)).state is State.RUNNING
    assert await store.depth() == 5


async def test_delayed_task_waits_for_its_time(store: TaskStore, now: float) -> None:
    assert await store.next_due_time() is None
    [later] = await store.create([new_task(delay=60.0)], now)
    [sooner] = await store.create([new_task(delay=30.0)], now)
    later_id, sooner_id = later.id, sooner.id
    assert await store.next_due_time() == pytest.approx(now + 30, abs=1e-3)
    assert await store.claim(10, now + 29, TYPES) == []

    assert [r.id for r in await store.claim(10, now + 30.5, TYPES)] == [sooner_id]
    assert await store.next_due_time() == pytest.approx(now + 60, abs=1e-3)
    assert [r.id for r in await store.claim(10, now + 61, TYPES)] == [later_id]
    assert await store.next_due_time() is None


# -- progress and outcomes ------------------------------------------------


async def test_set_progress_is_fenced_by_attempt(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task()], now)
    [claimed] = await store.claim(1, now, TYPES)
    claimed_version = claimed.version

    await store.set_progress([(task.id, 1, Progress(40.0, "reading", 4, 10))], now + 1)
    record = await current(store, task.id)
    assert record.progress == Progress(40.0, "reading", 4, 10)
    assert record.version == claimed_version + 1
    assert record.update_time == pytest.approx(now + 1, abs=1e-3)

    await store.set_progress(
        [(task.id, 2, Progress(90.0, "stale")), ("no-such-task", 1, Progress(1.0))], now + 2
    )
    record = await current(store, task.id)
    assert record.progress == Progress(40.0, "reading", 4, 10)
    assert record.version == claimed_version + 1


async def test_complete_with_a_result_succeeds(store: TaskStore, now: float) -> None:
    task, _ = await store.create([new_task(), new_task()], now)
    await store.claim(10, now, TYPES)
    changed = await store.complete(
        [Outcome(task.id, 1, result=value_bytes("done"), progress=Progress(60.0, "last"))],
        now + 2,
    )
    assert [(r.id, r.state) for r in changed] == [(task.id, State.SUCCEEDED)]
    record = await current(store, task.id)
    assert record.state is State.SUCCEEDED
    assert record.result == value_bytes("done")
    assert record.error is None
    assert record.progress is not None and record.progress.percent == 100.0
    assert record.progress.message == "last"
    assert record.end_time == pytest.approx(now + 2, abs=1e-3)
    assert record.attempt == 1
    assert await store.depth() == 1


async def test_failure_with_retry_at_goes_back_to_the_queue(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(max_attempts=2)], now)
    await store.claim(1, now, TYPES)
    [changed] = await store.complete([Outcome(task.id, 1, failure=BOOM, retry_at=now + 5)], now)
    assert (changed.state, changed.error) == (State.PENDING, BOOM)

    record = await current(store, task.id)
    assert (record.state, record.attempt, record.error) == (State.PENDING, 1, BOOM)
    assert record.end_time is None
    assert await store.claim(1, now + 4, TYPES) == []
    assert await store.next_due_time() == pytest.approx(now + 5, abs=1e-3)
    assert await store.depth() == 1

    [again] = await store.claim(1, now + 5, TYPES)
    assert (again.id, again.attempt) == (task.id, 2)
    await store.complete([Outcome(task.id, 2, failure=BOOM)], now + 6)
    record = await current(store, task.id)
    assert (record.state, record.attempt, record.error) == (State.FAILED, 2, BOOM)
    assert record.end_time == pytest.approx(now + 6, abs=1e-3)
    assert await store.depth() == 0


async def test_cancelled_outcome_cancels(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task()], now)
    await store.claim(1, now, TYPES)
    [changed] = await store.complete([Outcome(task.id, 1, cancelled=True)], now + 1)
    assert changed.state is State.CANCELLED
    record = await current(store, task.id)
    assert record.state is State.CANCELLED
    assert record.end_time == pytest.approx(now + 1, abs=1e-3)


async def test_reports_of_a_stale_attempt_are_ignored(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(max_attempts=3)], now)
    await store.claim(1, now, TYPES)
    await store.complete([Outcome(task.id, 1, failure=BOOM, retry_at=now)], now)
    [second] = await store.claim(1, now + 1, TYPES)
    assert second.attempt == 2
    version = second.version

    assert await store.complete([Outcome(task.id, 1, result=value_bytes("late"))], now + 2) == []
    assert await store.requeue(task.id, 1, now + 2) is None
    await store.set_progress([(task.id, 1, Progress(99.0))], now + 2)
    record = await current(store, task.id)
    assert (record.state, record.attempt, record.version) == (State.RUNNING, 2, version)
    assert record.result is None

    # And a report of an attempt that already finished changes nothing either.
    await store.complete([Outcome(task.id, 2, result=value_bytes("ok"))], now + 3)
    assert await store.complete([Outcome(task.id, 2, failure=BOOM)], now + 4) == []
    record = await current(store, task.id)
    assert (record.state, record.result) == (State.SUCCEEDED, value_bytes("ok"))


async def test_settle_completes_then_claims(store: TaskStore, now: float) -> None:
    first, second, third = await store.create(
        [new_task(max_attempts=2), new_task(priority=1), new_task()], now
    )
    [running] = await store.claim(1, now, TYPES)
    assert running.id == second.id
    # The retried task is due at once and, of a higher priority, claimed first.
    ended, claimed = await store.settle(
        [Outcome(second.id, 1, failure=BOOM, retry_at=now + 1)], 2, now + 1, TYPES
    )
    assert [(r.id, r.state) for r in ended] == [(second.id, State.PENDING)]
    assert [(r.id, r.state, r.attempt, r.claim) for r in claimed] == [
        (second.id, State.RUNNING, 2, 2),
        (first.id, State.RUNNING, 1, 1),
    ]
    # A stale report is fenced; nothing left to claim for another type.
    ended, claimed = await store.settle(
        [Outcome(second.id, 1, result=value_bytes("late")), Outcome(first.id, 1)],
        5,
        now + 2,
        ["no-such-type"],
    )
    assert [(r.id, r.state) for r in ended] == [(first.id, State.SUCCEEDED)]
    assert claimed == []
    assert (await current(store, second.id)).state is State.RUNNING
    assert (await current(store, third.id)).state is State.PENDING
    # With nothing to report it claims, and with no room it only completes.
    assert [r.id for r in (await store.settle([], 5, now + 3, TYPES))[1]] == [third.id]
    ended, claimed = await store.settle([Outcome(third.id, 1)], 0, now + 4, TYPES)
    assert ([r.state for r in ended], claimed) == ([State.SUCCEEDED], [])


async def test_requeue_gives_the_attempt_back(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task()], now)
    await store.claim(1, now, TYPES)
    await store.set_progress([(task.id, 1, Progress(30.0))], now)
    handed_back = await store.requeue(task.id, 1, now + 1)
    assert handed_back is not None
    assert (handed_back.state, handed_back.attempt) == (State.PENDING, 0)
    record = await current(store, task.id)
    assert (record.state, record.attempt, record.start_time) == (State.PENDING, 0, None)
    assert await store.depth() == 1

    [again] = await store.claim(1, now + 1, TYPES)
    assert (again.id, again.attempt) == (task.id, 1)
    assert await store.requeue("no-such-task", 1, now) is None


# -- cancel and retry -----------------------------------------------------


async def test_cancel_pending_is_immediate(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(delay=60.0)], now)
    cancelled = await store.cancel(task.id, now + 1)
    assert cancelled is not None and cancelled.record.state is State.CANCELLED
    assert cancelled.outcome is CancelOutcome.CANCELLED
    record = await current(store, task.id)
    assert record.state is State.CANCELLED
    assert record.end_time == pytest.approx(now + 1, abs=1e-3)
    version = record.version
    assert await store.depth() == 0
    assert await store.claim(1, now + 61, TYPES) == []

    # Cancelling again is a no-op, not an error.
    again = await store.cancel(task.id, now + 2)
    assert again is not None and again.outcome is CancelOutcome.UNCHANGED
    assert (again.record.state, again.record.version) == (State.CANCELLED, version)
    assert await store.cancel("no-such-task", now) is None


async def test_cancel_running_flags_it_and_tells_the_listener(store: TaskStore, now: float) -> None:
    listener = RecordingListener()
    store.attach(listener)
    [task] = await store.create([new_task(max_attempts=3)], now)
    [claimed] = await store.claim(1, now, TYPES)
    claimed_version = claimed.version

    flagged = await store.cancel(task.id, now + 1)
    assert flagged is not None and flagged.outcome is CancelOutcome.REQUESTED
    assert (flagged.record.state, flagged.record.cancel_requested) == (State.RUNNING, True)
    again = await store.cancel(task.id, now + 1)
    assert again is not None and again.outcome is CancelOutcome.UNCHANGED
    record = await current(store, task.id)
    assert record.cancel_requested and record.version > claimed_version
    await eventually(lambda: task.id in listener.cancels, "the listener hears of the cancel")

    # The cancel request wins over whatever the attempt reports.
    await store.complete([Outcome(task.id, 1, failure=BOOM, retry_at=now + 2)], now + 2)
    record = await current(store, task.id)
    assert record.state is State.CANCELLED
    assert await store.claim(1, now + 3, TYPES) == []


async def test_cancel_finished_is_an_invalid_transition(store: TaskStore, now: float) -> None:
    done, failed = await store.create([new_task(), new_task()], now)
    await store.claim(2, now, TYPES)
    await store.complete(
        [Outcome(done.id, 1, result=value_bytes("ok")), Outcome(failed.id, 1, failure=BOOM)], now
    )
    for task_id, state in ((done.id, State.SUCCEEDED), (failed.id, State.FAILED)):
        with pytest.raises(InvalidTransition) as caught:
            await store.cancel(task_id, now + 1)
        assert caught.value.record.state is state
        assert (await current(store, task_id)).state is state


async def test_retry_requeues_failed_and_cancelled_tasks(store: TaskStore, now: float) -> None:
    failing, cancelled = await store.create([new_task(max_attempts=2), new_task()], now)
    await store.cancel(cancelled.id, now)
    await store.claim(1, now, TYPES)
    await store.complete([Outcome(failing.id, 1, failure=BOOM, retry_at=now)], now)
    await store.claim(1, now, TYPES)
    await store.complete([Outcome(failing.id, 2, failure=BOOM)], now + 1)
    failed = await current(store, failing.id)
    assert (failed.state, failed.attempt) == (State.FAILED, 2)
    failed_version = failed.version

    retried = await store.retry(failing.id, now + 2)
    assert retried is not None and retried.state is State.PENDING
    record = await current(store, failing.id)
    assert (record.state, record.attempt, record.error) == (State.PENDING, 0, None)
    assert record.end_time is None and record.result is None
    assert record.version > failed_version
    assert await store.depth() == 1
    [again] = await store.claim(1, now + 2, TYPES)
    assert (again.id, again.attempt) == (failing.id, 1)

    retried = await store.retry(cancelled.id, now + 3)
    assert retried is not None and retried.state is State.PENDING
    assert [r.id for r in await store.claim(1, now + 3, TYPES)] == [cancelled.id]
    assert await store.retry("no-such-task", now) is None


async def test_retry_of_unfinished_or_succeeded_is_an_invalid_transition(
    store: TaskStore, now: float
) -> None:
    [running] = await store.create([new_task()], now)
    running_id = running.id
    await store.claim(1, now, TYPES)
    [succeeded] = await store.create([new_task()], now)
    succeeded_id = succeeded.id
    await store.claim(1, now, TYPES)
    await store.complete([Outcome(succeeded_id, 1, result=value_bytes("ok"))], now)
    [pending] = await store.create([new_task(delay=60.0)], now)
    pending_id = pending.id
    for task_id, state in (
        (pending_id, State.PENDING),
        (running_id, State.RUNNING),
        (succeeded_id, State.SUCCEEDED),
    ):
        with pytest.raises(InvalidTransition):
            await store.retry(task_id, now + 1)
        assert (await current(store, task_id)).state is state


# -- retention ------------------------------------------------------------


async def test_purge_drops_tasks_finished_before_the_time(store: TaskStore, now: float) -> None:
    first, second, unfinished = await store.create(
        [new_task(key="first"), new_task(), new_task()], now
    )
    first_id, second_id, unfinished_id = first.id, second.id, unfinished.id
    await store.claim(2, now, TYPES)
    await store.complete([Outcome(first_id, 1, result=value_bytes("ok"))], now + 1)
    await store.complete([Outcome(second_id, 1, failure=BOOM)], now + 2)

    assert await store.purge(now + 1.5) == 1
    assert await store.get(first_id) is None
    assert (await current(store, second_id)).state is State.FAILED
    assert await ids_of(store, ListQuery(page_size=10)) == [unfinished_id, second_id]
    # The purged task's idempotency key is free again.
    [reused] = await store.create([new_task(key="first", request="new")], now + 3)
    reused_id = reused.id
    assert reused_id != first_id

    assert await store.purge(now + 100) == 1
    assert await store.get(second_id) is None
    assert (await current(store, unfinished_id)).state is State.PENDING
    assert await store.purge(now + 100) == 0
    assert await store.depth() == 2


async def test_retention_count_keeps_the_newest_finished(
    make_store: StoreOpener, now: float
) -> None:
    store = make_store(retention_count=2)
    records = await store.create([new_task() for _ in range(4)], now)
    ids = [record.id for record in records]
    await store.claim(4, now, TYPES)
    for offset, task_id in enumerate(ids[:3], start=1):
        await store.complete([Outcome(task_id, 1, result=value_bytes("ok"))], now + offset)

    assert await store.get(ids[0]) is None
    assert [(await current(store, i)).state for i in ids[1:3]] == [State.SUCCEEDED] * 2
    assert (await current(store, ids[3])).state is State.RUNNING
    assert await ids_of(store, ListQuery(page_size=10)) == [ids[3], ids[2], ids[1]]


async def test_depth_counts_pending_and_running(store: TaskStore, now: float) -> None:
    records = await store.create([new_task() for _ in range(4)], now)
    ids = [record.id for record in records]
    assert await store.depth() == 4
    await store.claim(2, now, TYPES)
    assert await store.depth() == 4
    await store.complete([Outcome(ids[0], 1, result=value_bytes("ok"))], now)
    assert await store.depth() == 3
    await store.cancel(ids[3], now)
    assert await store.depth() == 2
    await store.cancel(ids[1], now)  # running: only flagged
    assert await store.depth() == 2
    await store.complete([Outcome(ids[1], 1, cancelled=True)], now)
    assert await store.depth() == 1


# -- listing --------------------------------------------------------------


async def test_list_page_newest_first_with_filters(store: TaskStore, now: float) -> None:
    specs = [
        new_task("echo", labels={"team": "a", "env": "prod"}),
        new_task("sleep", labels={"team": "a"}),
        new_task("echo", labels={"team": "b"}),
        new_task("echo"),
        new_task("echo", labels={"team": "a"}, tenant="acme"),
    ]
    ids = []
    for offset, spec in enumerate(specs):
        [record] = await store.create([spec], now + offset)
        ids.append(record.id)
    echo_a, sleep_a, echo_b, echo_none, acme = ids
    [running] = await store.claim(1, now + 10, TYPES)
    assert running.id == echo_a
    await store.cancel(echo_b, now + 10)

    everything = ListQuery(page_size=10)
    assert await ids_of(store, everything) == [echo_none, echo_b, sleep_a, echo_a]
    assert await ids_of(store, ListQuery(page_size=10, type="echo")) == [
        echo_none,
        echo_b,
        echo_a,
    ]
    assert await ids_of(store, ListQuery(page_size=10, labels=(("team", "a"),))) == [
        sleep_a,
        echo_a,
    ]
    assert await ids_of(
        store, ListQuery(page_size=10, labels=(("team", "a"), ("env", "prod")))
    ) == [echo_a]
    pending_or_running = frozenset({State.PENDING, State.RUNNING})
    assert await ids_of(store, ListQuery(page_size=10, states=pending_or_running)) == [
        echo_none,
        sleep_a,
        echo_a,
    ]
    assert await ids_of(store, ListQuery(page_size=10, states=frozenset({State.CANCELLED}))) == [
        echo_b
    ]
    assert await ids_of(
        store, ListQuery(page_size=10, type="echo", states=frozenset({State.PENDING}))
    ) == [echo_none]
    assert await ids_of(store, ListQuery(page_size=10, tenant="acme")) == [acme]
    assert await ids_of(store, ListQuery(page_size=10, tenant="globex")) == []


async def test_list_page_cursor_pages_without_repeats_or_gaps(store: TaskStore, now: float) -> None:
    expected = []
    for offset in range(7):
        labels = {"keep": "yes"} if offset != 3 else {"keep": "no"}
        [record] = await store.create([new_task(labels=labels)], now + offset)
        if offset != 3:
            expected.append(record.id)
    expected.reverse()

    seen: list[str] = []
    before: int | None = None
    for pages in range(1, 10):
        page, before = await store.list_page(
            ListQuery(page_size=2, labels=(("keep", "yes"),), before_seq=before)
        )
        assert len(page) <= 2
        seen.extend(record.id for record in page)
        if pages == 1:
            # A task created while paging belongs before the first page: never seen.
            await store.create([new_task(labels={"keep": "yes"})], now + 20)
        if before is None:
            break
    assert seen == expected
    assert pages in (3, 4)  # a last, empty page is allowed


# -- subscriptions --------------------------------------------------------


async def test_subscription_delivers_each_change_until_terminal(
    store: TaskStore, now: float
) -> None:
    [task] = await store.create([new_task()], now)
    subscription = store.subscribe(task.id)
    try:
        await store.claim(1, now, TYPES)
        seen = await next_change(subscription)
        assert seen.state is State.RUNNING
        assert seen.version == (await current(store, task.id)).version

        await store.set_progress([(task.id, 1, Progress(50.0, "half"))], now + 1)
        seen = await next_change(subscription)
        assert seen.progress == Progress(50.0, "half")
        assert seen.version == (await current(store, task.id)).version

        await store.complete([Outcome(task.id, 1, result=value_bytes("ok"))], now + 2)
        seen = await next_change(subscription)
        final = await current(store, task.id)
        assert (seen.state, seen.version) == (State.SUCCEEDED, final.version)
        assert seen.result == value_bytes("ok")
    finally:
        subscription.close()


async def test_subscription_folds_changes_into_the_latest(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task()], now)
    subscription = store.subscribe(task.id)
    try:
        await store.claim(1, now, TYPES)
        for step in range(1, 4):
            await store.set_progress([(task.id, 1, Progress(step * 10.0))], now + step)
        latest = (await current(store, task.id)).version
        # A slow reader: the changes arrive while nobody waits.
        await asyncio.sleep(0.3)
        seen = await next_change(subscription)
        assert (seen.version, seen.progress) == (latest, Progress(30.0))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(subscription.next(), 0.2)

        await store.cancel(task.id, now + 5)
        seen = await next_change(subscription)
        assert (seen.state, seen.cancel_requested) == (State.RUNNING, True)
        await store.complete([Outcome(task.id, 1, cancelled=True)], now + 6)
        seen = await next_change(subscription)
        assert seen.state is State.CANCELLED
        assert seen.version == (await current(store, task.id)).version
    finally:
        subscription.close()


async def test_closed_subscription_does_not_stop_changes(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task()], now)
    store.subscribe(task.id).close()
    other = store.subscribe(task.id)
    try:
        await store.cancel(task.id, now)
        assert (await next_change(other)).state is State.CANCELLED
    finally:
        other.close()
    assert (await current(store, task.id)).state is State.CANCELLED


# -- a durable store -------------------------------------------------------


@pytest.mark.stores("sqlite", "redis")  # memory:// keeps nothing, by design
async def test_reopened_store_keeps_its_tasks(make_store: StoreOpener, now: float) -> None:
    store = make_store()
    done, waiting, delayed = await store.create(
        [
            new_task(key="done", priority=5),
            new_task(labels={"team": "a"}, priority=3),
            new_task(delay=60.0),
        ],
        now,
    )
    done_id, waiting_id, delayed_id, delayed_seq = done.id, waiting.id, delayed.id, delayed.seq
    assert [r.id for r in await store.claim(1, now, TYPES)] == [done_id]
    await store.complete([Outcome(done_id, 1, result=value_bytes("ok"))], now + 1)
    assert [r.id for r in await store.claim(1, now + 1, TYPES)] == [waiting_id]
    await store.complete([Outcome(waiting_id, 1, failure=BOOM, retry_at=now)], now + 1)
    await make_store.close(store)

    reopened = make_store()
    finished = await current(reopened, done_id)
    assert (finished.state, finished.result, finished.attempt) == (
        State.SUCCEEDED,
        value_bytes("ok"),
        1,
    )
    assert finished.end_time == pytest.approx(now + 1, abs=1e-3)
    [repeat] = await reopened.create([new_task(key="done")], now + 2)
    assert repeat.id == done_id
    with pytest.raises(IdempotencyConflict):
        await reopened.create([new_task(key="done", request="other")], now + 2)

    pending = await current(reopened, waiting_id)
    assert (pending.state, pending.attempt, pending.error) == (State.PENDING, 1, BOOM)
    assert (pending.labels, pending.priority) == ({"team": "a"}, 3)
    assert await reopened.depth() == 2
    assert await reopened.next_due_time() == pytest.approx(now + 60, abs=1e-3)
    [fresh] = await reopened.create([new_task()], now + 2)
    assert fresh.seq > delayed_seq
    assert [r.id for r in await reopened.claim(10, now + 2, TYPES)] == [waiting_id, fresh.id]
    assert [r.id for r in await reopened.claim(10, now + 61, TYPES)] == [delayed_id]
    assert await ids_of(reopened, ListQuery(page_size=10)) == [
        fresh.id,
        delayed_id,
        waiting_id,
        done_id,
    ]


# -- a store shared by several processes ----------------------------------


def open_shared_pair(make_store: StoreOpener) -> tuple[TaskStore, TaskStore]:
    """Two instances on one URL with a lease of about a second."""
    first = make_store(short_lease=True)
    assert first.lease_seconds is not None
    return first, make_store(short_lease=True)


@pytest.mark.stores("redis")
async def test_second_instance_sees_and_claims_the_tasks(
    store: TaskStore, second_store: TaskStore, now: float
) -> None:
    listener = RecordingListener()
    second_store.attach(listener)
    [task] = await store.create([new_task(labels={"team": "a"})], now)
    assert (await current(second_store, task.id)).labels == {"team": "a"}
    [claimed] = await second_store.claim(10, now, TYPES)
    assert (claimed.id, claimed.attempt) == (task.id, 1)
    assert await store.claim(10, now, TYPES) == []
    record = await current(store, task.id)
    assert (record.state, record.attempt) == (State.RUNNING, 1)

    # A cancel asked of one instance reaches the one that runs the task.
    await store.cancel(task.id, now + 1)
    await eventually(lambda: task.id in listener.cancels, "the running instance hears the cancel")
    report = await second_store.renew([(task.id, 1)], now + 1)
    assert report.cancel_requested == [task.id]
    assert report.lost == []

    # So does news of work another instance created.
    heard = listener.work
    await store.create([new_task()], now + 2)
    await eventually(lambda: listener.work > heard, "the other instance hears of new work")


@pytest.mark.stores("redis")
async def test_lease_renewed_is_kept_and_lapsed_is_reaped(
    make_store: StoreOpener, now: float
) -> None:
    first, second = open_shared_pair(make_store)
    assert first.lease_seconds == 1.0
    [task] = await first.create([new_task(max_attempts=3)], now)
    await second.claim(1, now, TYPES)

    assert (await second.renew([(task.id, 1)], now + 0.8)).lost == []
    # Renewed at +0.8, the lease holds until +1.8 (plus the margin).
    assert await first.reap(now + 1.5) == 0
    assert (await current(first, task.id)).state is State.RUNNING
    assert await first.reap(now + 3) == 1
    record = await current(first, task.id)
    assert (record.state, record.attempt) == (State.PENDING, 1)

    # The lapsed attempt is told it is lost, and its reports are refused.
    report = await second.renew([(task.id, 1)], now + 3.1)
    assert report.lost == [task.id]
    assert await second.complete([Outcome(task.id, 1, result=value_bytes("late"))], now + 3) == []
    [again] = await first.claim(1, now + 3.2, TYPES)
    assert (again.id, again.attempt) == (task.id, 2)
    assert await first.reap(now + 3.5) == 0


@pytest.mark.stores("redis")
async def test_lapsed_lease_without_attempts_left_fails_interrupted(
    make_store: StoreOpener, now: float
) -> None:
    first, second = open_shared_pair(make_store)
    [task] = await first.create([new_task(max_attempts=1)], now)
    await second.claim(1, now, TYPES)
    # Within the margin for clock skew the lease still holds.
    assert await first.reap(now + 1.05) == 0
    assert await first.reap(now + 1.5) == 1
    record = await current(first, task.id)
    assert record.state is State.FAILED
    assert record.error is not None and record.error.code == ErrorCode.INTERRUPTED
    assert record.end_time is not None
    assert await first.depth() == 0
