"""The fencing contract, for every store: a report of a claim that no longer
holds its task is refused, however the task got away from it.

The claim number a store fences on only grows. The attempt number does not:
RetryTask starts it again and a hand-back gives the attempt back, so an old
claim and a new one can share an attempt number, and must still be told
apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis

from conveyor import Client, TaskState
from conveyor_server.stores import (
    ErrorCode,
    Outcome,
    Progress,
    RedisStore,
    State,
    TaskRecord,
    TaskStore,
)
from tests.support.server import ServerThread
from tests.support.stores import BOOM, TYPES, current, new_task, struct_bytes, value_bytes


@pytest.fixture
def now() -> float:
    return time.time()


async def assert_stale_claim_is_refused(store: TaskStore, task_id: str, now: float) -> None:
    """The first claim's reports change nothing: the task runs as a newer
    claim of the same attempt number, 1."""
    before = await current(store, task_id)
    assert (before.state, before.attempt) == (State.RUNNING, 1)
    await store.set_progress([(task_id, 1, Progress(99.0, "stale"))], now)
    assert await store.complete([Outcome(task_id, 1, result=value_bytes("stale"))], now) == []
    assert await store.requeue(task_id, 1, now) is None
    after = await current(store, task_id)
    assert (after.state, after.attempt, after.version) == (State.RUNNING, 1, before.version)
    assert after.progress is None and after.result is None


async def finish_fresh_claim(store: TaskStore, task_id: str, claim: int, now: float) -> None:
    await store.set_progress([(task_id, claim, Progress(50.0, "fresh"))], now)
    assert (await current(store, task_id)).progress == Progress(50.0, "fresh")
    [done] = await store.complete([Outcome(task_id, claim, result=value_bytes("fresh"))], now)
    assert (done.state, done.result, done.attempt) == (State.SUCCEEDED, value_bytes("fresh"), 1)


async def test_a_claim_from_before_a_retry_is_fenced(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(max_attempts=1)], now)
    [first] = await store.claim(1, now, TYPES)
    assert first.attempt == 1
    [failed] = await store.complete([Outcome(task.id, 1, failure=BOOM)], now + 1)
    assert failed.state is State.FAILED
    await store.retry(task.id, now + 2)
    [again] = await store.claim(1, now + 3, TYPES)
    assert again.attempt == 1

    # The first claim's worker reports again (a duplicate, or a report it
    # believed lost): it must not end the new run.
    await assert_stale_claim_is_refused(store, task.id, now + 4)
    await finish_fresh_claim(store, task.id, again.claim, now + 5)


async def test_a_claim_from_before_a_hand_back_is_fenced(store: TaskStore, now: float) -> None:
    [task] = await store.create([new_task(max_attempts=2)], now)
    await store.claim(1, now, TYPES)
    handed_back = await store.requeue(task.id, 1, now + 1)
    assert handed_back is not None and handed_back.attempt == 0
    [again] = await store.claim(1, now + 2, TYPES)
    assert again.attempt == 1

    await assert_stale_claim_is_refused(store, task.id, now + 3)
    await finish_fresh_claim(store, task.id, again.claim, now + 4)


@pytest.mark.stores("redis")
async def test_a_worker_reaped_then_retried_cannot_win(store: TaskStore, now: float) -> None:
    """The paused worker of issue 9: its lease lapses, the reaper fails the
    task, RetryTask queues it, another worker claims it as attempt 1 again;
    then the paused worker wakes up and reports."""
    assert isinstance(store, RedisStore)
    [task] = await store.create([new_task(max_attempts=1)], now)
    await store.claim(1, now, TYPES)
    assert await store.reap(now + 1000) == 1
    reaped = await current(store, task.id)
    assert reaped.state is State.FAILED
    assert reaped.error is not None and reaped.error.code == ErrorCode.INTERRUPTED
    await store.retry(task.id, now + 1001)
    [again] = await store.claim(1, now + 1002, TYPES)
    assert again.attempt == 1

    report = await store.renew([(task.id, 1)], now + 1003)
    assert report.lost == [task.id]
    await assert_stale_claim_is_refused(store, task.id, now + 1003)
    assert (await store.renew([(task.id, again.claim)], now + 1004)).lost == []
    await finish_fresh_claim(store, task.id, again.claim, now + 1005)


@pytest.mark.slow  # waits for a lease to lapse
def test_a_paused_worker_does_not_overwrite_the_run_after_a_retry(
    redis_url: str, make_server: Callable[..., ServerThread]
) -> None:
    """The same through a real server: the paused worker is a store that
    claimed the task and then stopped renewing; the server reaps it, the
    client retries it, the server runs it again, and the paused worker's
    late report must lose to the server's run."""
    url = f"{redis_url}&lease_margin=0.1"
    loop = asyncio.new_event_loop()
    paused = RedisStore(url, max_queue=10, retention_count=10, lease_seconds=1.0)

    async def claim_and_pause() -> str:
        runs = new_task("wait_for_cancel", payload=struct_bytes(seconds=1.5))
        [task] = await paused.create([runs], time.time())
        [claimed] = await paused.claim(1, time.time(), ["wait_for_cancel"])
        assert claimed.id == task.id
        return task.id

    async def report_late(task_id: str) -> list[TaskRecord]:
        # Its first claim: the number it holds since before the retry.
        late = Outcome(task_id, 1, result=value_bytes("stale"))
        return await paused.complete([late], time.time())

    try:
        task_id = loop.run_until_complete(claim_and_pause())
        server = make_server(store=url, lease_seconds=1.0)
        with Client(server.address, timeout=5.0) as client:
            reaped = client.wait(task_id, timeout=10)
            assert reaped.state is TaskState.FAILED
            assert reaped.error is not None and reaped.error.code == ErrorCode.INTERRUPTED
            client.retry(task_id)
            for seen in client.watch(task_id):
                if seen.state is TaskState.RUNNING and seen.progress.percent == 10:
                    break  # the server's handler runs
            assert loop.run_until_complete(report_late(task_id)) == []
            done = client.wait(task_id, timeout=10)
            # The server's run, not stopped as if it had lost its lease.
            assert (done.state, done.attempt) == (TaskState.SUCCEEDED, 1)
            assert done.result == {"stopped": False}
    finally:
        loop.run_until_complete(paused.close())
        loop.close()


async def test_a_redis_task_stored_without_a_claim_number_is_fenced_on_its_attempt(
    redis_url: str,
) -> None:
    """A hash an older version wrote has no claim number: its attempt, which
    that version fenced on, stands for it, and later claims go past it."""
    store = RedisStore(redis_url, max_queue=10, retention_count=10, lease_seconds=30.0)
    try:
        now = time.time()
        [task] = await store.create([new_task(max_attempts=3)], now)
        await store.claim(1, now, TYPES)
        prefix = redis_url.split("prefix=")[1]
        with redis.Redis.from_url(redis_url.split("?")[0]) as client:
            key = f"{prefix}:task:{task.id}"
            client.hset(key, "attempt", "2")
            client.hdel(key, "claim")
        old = await current(store, task.id)
        assert (old.state, old.attempt, old.claim) == (State.RUNNING, 2, 2)
        assert (await store.renew([(task.id, 2)], now + 1)).lost == []

        handed_back = await store.requeue(task.id, 2, now + 2)
        assert handed_back is not None
        assert (handed_back.attempt, handed_back.claim) == (1, 2)
        [again] = await store.claim(1, now + 3, TYPES)
        assert (again.attempt, again.claim) == (2, 3)
        assert await store.complete([Outcome(task.id, 2, result=b"")], now + 4) == []
        [done] = await store.complete([Outcome(task.id, 3, result=b"")], now + 4)
        assert done.state is State.SUCCEEDED
    finally:
        await store.close()
