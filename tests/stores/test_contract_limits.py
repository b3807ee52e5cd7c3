"""The TaskStore contract on limits, for every store: a type's max_running
(whatever path a task takes out of RUNNING), its max_running_per_key, its
token bucket of starts per second, its pause; the wake-ups when a limit
frees; the settings and counts kept per type; and why a due task waits.

Times are `now` values the tests choose: the token bucket refills by them,
so no test sleeps. They are whole seconds plus binary fractions, so that
the tokens a store computes from them are exact.
"""

from __future__ import annotations

import time

import pytest

from conveyor_server.stores import (
    Outcome,
    PendingReason,
    State,
    TaskRecord,
    TaskStore,
    TypeCounts,
    TypeLimits,
    TypeSettings,
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


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


def ok(record: TaskRecord) -> Outcome:
    return Outcome(record.id, record.claim, result=value_bytes("ok"))


async def claim_ids(store: TaskStore, now: float, limit: int = 10) -> list[str]:
    return [r.id for r in await store.claim(limit, now, TYPES)]


async def counts(store: TaskStore, task_type: str = "echo") -> TypeCounts:
    return (await store.type_counts()).get(task_type, TypeCounts())


# -- max_running ----------------------------------------------------------


async def test_max_running_holds_whichever_way_a_task_leaves_running(
    store: TaskStore, now: float
) -> None:
    await store.update_type("echo", now, limits={"max_running": 2})
    await store.create([new_task(max_attempts=3) for _ in range(8)], now)
    [other] = await store.create([new_task("sleep")], now)

    # Two of echo, and the other type is not held back by echo's limit.
    first = await store.claim(10, now, TYPES)
    assert sorted(r.type for r in first) == ["echo", "echo", "sleep"]
    a, b = [(r.id, r.claim) for r in first if r.id != other.id]
    assert await store.claim(10, now, TYPES) == []
    assert await counts(store) == TypeCounts(running=2, pending=6)

    # Succeeded: one place frees.
    await store.complete([Outcome(a[0], a[1], result=value_bytes("ok"))], now + 1)
    [c] = [(r.id, r.claim) for r in await store.claim(10, now + 1, TYPES)]
    assert await store.claim(10, now + 1, TYPES) == []
    # Failed with a retry to come: back to PENDING, its place frees.
    await store.complete([Outcome(b[0], b[1], failure=BOOM, retry_at=now + 1)], now + 1)
    [d] = [(r.id, r.claim) for r in await store.claim(10, now + 1, TYPES)]
    assert await store.claim(10, now + 1, TYPES) == []
    # Handed back.
    assert await store.requeue(c[0], c[1], now + 2) is not None
    [e] = [(r.id, r.claim) for r in await store.claim(10, now + 2, TYPES)]
    # A cancel asked of a running task frees nothing until the attempt ends.
    await store.cancel(d[0], now + 3)
    assert await store.claim(10, now + 3, TYPES) == []
    await store.complete([Outcome(d[0], d[1], cancelled=True)], now + 3)
    assert len(await store.claim(10, now + 3, TYPES)) == 1
    # Failed for good.
    await store.complete([Outcome(e[0], e[1], failure=BOOM)], now + 4)
    assert len(await store.claim(10, now + 4, TYPES)) == 1
    assert await store.claim(10, now + 4, TYPES) == []
    assert (await counts(store)).running == 2


async def test_limits_in_force_are_the_overrides_over_the_declared_defaults(
    store: TaskStore, now: float
) -> None:
    await store.declare_type_defaults({"echo": TypeLimits(max_running=1)}, now)
    await store.create([new_task() for _ in range(6)], now)
    assert len(await claim_ids(store, now)) == 1

    settings = await store.update_type("echo", now + 1, limits={"max_running": 3})
    assert settings.limits.max_running == 3
    assert settings.defaults == TypeLimits(max_running=1)
    assert len(await claim_ids(store, now + 1)) == 2

    # Back to the default: three run, over the limit of one; none more starts.
    settings = await store.update_type("echo", now + 2, restore=["max_running"])
    assert (settings.overrides, settings.limits.max_running) == ((), 1)
    assert await claim_ids(store, now + 2) == []
    # An override of 0 is no limit.
    await store.update_type("echo", now + 3, limits={"max_running": 0})
    assert len(await claim_ids(store, now + 3)) == 3


async def test_type_settings_keep_defaults_overrides_and_pause(
    store: TaskStore, now: float
) -> None:
    assert await store.type_settings() == {}
    await store.declare_type_defaults(
        {"echo": TypeLimits(max_running=4, max_starts_per_second=2.5), "sleep": TypeLimits()},
        now,
    )
    await store.update_type(
        "echo", now + 1, limits={"max_running_per_key": 2, "burst": 5}, paused=True
    )
    settings = await store.type_settings()
    assert set(settings) == {"echo", "sleep"}
    echo = settings["echo"]
    assert echo.defaults == TypeLimits(max_running=4, max_starts_per_second=2.5)
    assert dict(echo.overrides) == {"max_running_per_key": 2, "burst": 5}
    assert echo.paused
    assert echo.update_time == pytest.approx(now + 1)
    assert echo.limits == TypeLimits(4, 2, 2.5, 5)
    assert settings["sleep"] == TypeSettings("sleep", update_time=pytest.approx(now))

    # The last declaration wins; the run-time settings stay.
    await store.declare_type_defaults({"echo": TypeLimits(max_running=8)}, now + 2)
    echo = (await store.type_settings())["echo"]
    assert echo.defaults == TypeLimits(max_running=8)
    assert dict(echo.overrides) == {"max_running_per_key": 2, "burst": 5}
    assert echo.paused
    # Settings of a type nobody declared.
    made = await store.update_type("report", now + 3, limits={"max_running": 1})
    assert (made.defaults, made.limits.max_running) == (TypeLimits(), 1)
    assert (await store.type_settings())["report"] == made


# -- max_running_per_key --------------------------------------------------


async def test_key_limit_counts_per_tenant_and_key(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_running_per_key": 1})
    acme_k = await store.create(
        [new_task(tenant="acme", concurrency_key="k") for _ in range(3)], now
    )
    [acme_j] = await store.create([new_task(tenant="acme", concurrency_key="j")], now)
    [globex_k] = await store.create([new_task(tenant="globex", concurrency_key="k")], now)
    unkeyed = await store.create([new_task(tenant="acme") for _ in range(2)], now)
    first_k, second_k = acme_k[0].id, acme_k[1].id

    claimed = await store.claim(10, now, TYPES)
    assert sorted(r.id for r in claimed) == sorted(
        [first_k, acme_j.id, globex_k.id, *(r.id for r in unkeyed)]
    )
    assert await store.claim(10, now, TYPES) == []
    # The next of a key starts when the running one of that key ends.
    [running_k] = [r for r in claimed if r.id == first_k]
    await store.complete([ok(running_k)], now + 1)
    assert await claim_ids(store, now + 1) == [second_k]


async def test_a_key_at_its_limit_holds_back_no_other_key_or_tenant(
    store: TaskStore, now: float
) -> None:
    await store.update_type("echo", now, limits={"max_running_per_key": 1})
    busy = await store.create(
        [new_task(tenant="acme", concurrency_key="busy") for _ in range(50)], now
    )
    assert await claim_ids(store, now, 1) == [busy[0].id]
    [other_key] = await store.create([new_task(tenant="acme", concurrency_key="free")], now)
    [other_tenant] = await store.create([new_task(tenant="globex", concurrency_key="busy")], now)
    # Claims of one at a time find them at once, behind the 49 held back.
    got = [*await claim_ids(store, now, 1), *await claim_ids(store, now, 1)]
    assert sorted(got) == sorted([other_key.id, other_tenant.id])
    assert await claim_ids(store, now, 1) == []
    assert (await counts(store)).pending == 49


# -- max_starts_per_second ------------------------------------------------


async def test_starts_per_second_is_a_token_bucket(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_starts_per_second": 2, "burst": 4})
    await store.create([new_task() for _ in range(14)], now)
    # Full at first: a burst of 4.
    assert len(await claim_ids(store, now)) == 4
    assert await claim_ids(store, now) == []
    # 2 tokens a second: one in half a second, three in a second and a half.
    assert len(await claim_ids(store, now + 0.5)) == 1
    assert await claim_ids(store, now + 0.75) == []
    assert len(await claim_ids(store, now + 2.0)) == 3
    # Never more than the bucket holds, however long it waited.
    assert len(await claim_ids(store, now + 100.0)) == 4
    assert await claim_ids(store, now + 100.0) == []


async def test_bucket_size_defaults_to_one_second_of_starts(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_starts_per_second": 3})
    await store.create([new_task() for _ in range(5)], now)
    assert len(await claim_ids(store, now)) == 3
    assert await claim_ids(store, now + 0.25) == []
    assert len(await claim_ids(store, now + 0.5)) == 1


async def test_next_due_time_counts_the_next_token(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_starts_per_second": 2})
    await store.create([new_task() for _ in range(3)], now)
    await store.create([new_task(delay=30.0)], now)
    assert len(await claim_ids(store, now)) == 2
    # The third waits for a token, due in half a second.
    assert await store.next_due_time() == pytest.approx(now + 0.5, abs=1e-3)
    assert len(await claim_ids(store, now + 0.5)) == 1
    # Nothing due waits for a token: only the delayed task is left.
    assert await store.next_due_time() == pytest.approx(now + 30, abs=1e-3)


# -- pause ----------------------------------------------------------------


async def test_a_paused_type_starts_nothing_and_resumes(store: TaskStore, now: float) -> None:
    listener = RecordingListener()
    store.attach(listener)
    [running] = await store.create([new_task()], now)
    await store.claim(1, now, TYPES)
    settings = await store.update_type("echo", now, paused=True)
    assert settings.paused
    # Submits are still accepted; nothing of the type starts; other types do.
    waiting = await store.create([new_task(), new_task()], now)
    [other] = await store.create([new_task("sleep")], now)
    assert await claim_ids(store, now + 1) == [other.id]
    # A running task finishes.
    [ended] = await store.complete([Outcome(running.id, 1, result=value_bytes("ok"))], now + 1)
    assert ended.state is State.SUCCEEDED
    assert await claim_ids(store, now + 2) == []

    told = listener.work
    settings = await store.update_type("echo", now + 3, paused=False)
    assert not settings.paused
    await eventually(lambda: listener.work > told, "resuming a type tells of work")
    assert sorted(await claim_ids(store, now + 3)) == sorted(r.id for r in waiting)


# -- wake-ups -------------------------------------------------------------


async def test_a_freed_limit_tells_the_listener(store: TaskStore, now: float) -> None:
    listener = RecordingListener()
    store.attach(listener)
    await store.update_type("echo", now, limits={"max_running": 1, "max_running_per_key": 1})
    await store.create([new_task(), new_task()], now)
    keyed = await store.create([new_task(concurrency_key="k"), new_task(concurrency_key="k")], now)
    first_key, second_key = keyed[0].id, keyed[1].id
    [first] = await store.claim(10, now, TYPES)
    first_id, first_claim = first.id, first.claim

    # A task of a type at its max_running ends.
    told = listener.work
    await store.complete([Outcome(first_id, first_claim, result=b"")], now + 1)
    await eventually(lambda: listener.work > told, "a place freed under max_running")

    # A limit is raised.
    await store.claim(1, now + 1, TYPES)
    told = listener.work
    await store.update_type("echo", now + 2, limits={"max_running": 10})
    await eventually(lambda: listener.work > told, "a raised limit")

    # A task of a key at its limit ends.
    await store.claim(10, now + 2, TYPES)
    assert await store.claim(10, now + 2, TYPES) == []
    running_key = await current(store, first_key)
    assert running_key.state is State.RUNNING
    told = listener.work
    await store.complete([Outcome(first_key, running_key.claim, result=b"")], now + 3)
    await eventually(lambda: listener.work > told, "a place freed under max_running_per_key")
    assert await claim_ids(store, now + 3) == [second_key]


# -- counts and reasons ---------------------------------------------------


async def test_type_counts_count_running_and_every_pending(store: TaskStore, now: float) -> None:
    first, _, _ = await store.create(
        [new_task(), new_task(delay=60.0), new_task(depends_on_requests=(0,))], now
    )
    await store.create([new_task("sleep")], now)
    assert await counts(store) == TypeCounts(running=0, pending=3)
    assert await claim_ids(store, now, 1) == [first.id]
    # Running 1; pending: the delayed one and the one waiting on the first.
    assert await counts(store) == TypeCounts(running=1, pending=2)
    assert await counts(store, "sleep") == TypeCounts(running=0, pending=1)
    await store.complete([Outcome(first.id, 1, result=b"")], now + 1)
    assert await counts(store) == TypeCounts(running=0, pending=2)


async def test_pending_reason_names_the_first_limit_that_holds(
    store: TaskStore, now: float
) -> None:
    await store.update_type("echo", now, limits={"max_running": 1})
    await store.create([new_task(tenant="acme", concurrency_key="k")], now)
    [waiting] = await store.create([new_task(tenant="acme", concurrency_key="k")], now)
    waiting_id = waiting.id

    async def reason() -> tuple[PendingReason, str]:
        explained = await store.pending_reason(await current(store, waiting_id, "acme"), now)
        return explained.reason, explained.message

    queued, message = await reason()
    assert queued is PendingReason.QUEUED
    assert message.startswith("due, ") and "of type echo" in message

    await store.claim(1, now, TYPES)
    assert await reason() == (
        PendingReason.CONCURRENCY_LIMIT,
        "task type echo allows 1 running tasks and 1 are running",
    )
    # Paused comes first.
    await store.update_type("echo", now, paused=True)
    assert await reason() == (PendingReason.TYPE_PAUSED, "task type echo is paused")
    await store.update_type(
        "echo", now, limits={"max_running": 0, "max_running_per_key": 1}, paused=False
    )
    assert await reason() == (
        PendingReason.KEY_CONCURRENCY_LIMIT,
        "concurrency key k of task type echo allows 1 running tasks and 1 are running",
    )
    # A key at its limit comes before an empty bucket, as the enum orders them.
    await store.update_type("echo", now, limits={"max_starts_per_second": 1})
    [other] = await store.create([new_task(tenant="acme")], now)
    other_id = other.id
    assert await claim_ids(store, now) == [other_id]  # took the bucket's one token
    assert (await reason())[0] is PendingReason.KEY_CONCURRENCY_LIMIT


async def test_pending_reason_tells_when_the_next_token_comes(store: TaskStore, now: float) -> None:
    await store.update_type("echo", now, limits={"max_starts_per_second": 5})
    created = [r.id for r in await store.create([new_task() for _ in range(6)], now)]
    started = await claim_ids(store, now)
    assert len(started) == 5
    [last] = set(created) - set(started)
    explained = await store.pending_reason(await current(store, last), now)
    assert (explained.reason, explained.message) == (
        PendingReason.RATE_LIMIT,
        "task type echo starts at most 5 tasks per second; the next start is allowed in 0.2 s",
    )


# -- shared by processes --------------------------------------------------


# A store of one process (memory, SQLite) has no second instance on its
# data: this holds only where two processes open one store.
@pytest.mark.stores("redis")
async def test_a_limit_of_two_holds_across_two_store_objects(
    make_store: StoreOpener, now: float
) -> None:
    one, two = make_store(), make_store()
    await one.update_type("echo", now, limits={"max_running": 2})
    await one.create([new_task() for _ in range(5)], now)
    assert (await two.type_settings())["echo"].limits.max_running == 2

    mine = await one.claim(1, now, TYPES)
    theirs = await two.claim(10, now, TYPES)
    assert (len(mine), len(theirs)) == (1, 1)
    assert await one.claim(10, now, TYPES) == []
    assert await two.claim(10, now, TYPES) == []
    assert await counts(one) == TypeCounts(running=2, pending=3)

    await one.complete([ok(mine[0])], now + 1)
    assert len(await two.claim(10, now + 1, TYPES)) == 1
    assert await one.claim(10, now + 1, TYPES) == []
