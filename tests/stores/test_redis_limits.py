"""RedisStore's fair queues and limits beyond the shared contract: what
other processes hear, key groups parked out of turn, one script per runner
round, and tasks queued by the version before fair queues.

Some tests read the layout straight from Redis (see the keys in
`redis/scripts.py`): parking is about the work claims do, which the
contract cannot see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from conveyor_server.stores import Outcome, RedisStore, State, TypeCounts
from tests.support.stores import TYPES, RecordingListener, current, eventually, new_task

NOW = 1_700_000_000.0

OpenStore = Callable[..., RedisStore]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url.split("?")[0]) as connection:
        yield connection


@pytest.fixture
def prefix(redis_url: str) -> str:
    return redis_url.split("prefix=")[1]


@pytest.fixture
async def open_store(redis_url: str) -> AsyncIterator[OpenStore]:
    opened: list[RedisStore] = []

    def make() -> RedisStore:
        store = RedisStore(
            redis_url, max_queue=1000, retention_count=1000, lease_seconds=30.0, clock=lambda: NOW
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def sized(name: str) -> str:
    return f"{len(name.encode())}:{name}"


async def test_a_freed_limit_reaches_the_workers_of_other_processes(
    open_store: OpenStore,
) -> None:
    here, there = open_store(), open_store()
    worker = RecordingListener()
    there.attach(worker)
    await eventually(lambda: worker.work > 0, "the listener is connected")
    await here.update_type("echo", NOW, limits={"max_running": 1})
    await here.create([new_task(), new_task()], NOW)
    [running] = await here.claim(10, NOW, TYPES)
    assert await there.claim(10, NOW, TYPES) == []

    told = worker.work
    await here.complete([Outcome(running.id, running.claim, result=b"")], NOW + 1)
    await eventually(lambda: worker.work > told, "the other process hears the place freed")
    assert len(await there.claim(10, NOW + 1, TYPES)) == 1


async def test_the_next_token_is_due_for_every_process_serving_the_type(
    open_store: OpenStore,
) -> None:
    here, there = open_store(), open_store()
    await here.update_type("echo", NOW, limits={"max_starts_per_second": 4})
    await here.create([new_task() for _ in range(5)], NOW)
    # `there` serves echo too, and found its bucket empty.
    assert len(await here.claim(10, NOW, TYPES)) == 4
    assert await there.claim(10, NOW, TYPES) == []
    # Asked later (no hint from a claim just made), it reads the time.
    there._due_hint = None
    assert await there.next_due_time() == pytest.approx(NOW + 0.25)


async def test_a_key_at_its_limit_is_parked_out_of_turn_until_one_of_its_tasks_ends(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    store = open_store()
    await store.update_type("echo", NOW, limits={"max_running_per_key": 1})
    await store.create([new_task(tenant="acme", concurrency_key="k") for _ in range(4)], NOW)
    [free] = await store.create([new_task(tenant="acme", concurrency_key="free")], NOW)
    keys = f"{prefix}:fair:{sized('echo')}:0:{sized('acme')}"
    parked = f"{prefix}:parked:{sized('echo')}"

    claimed = await store.claim(10, NOW, TYPES)
    [running] = [r for r in claimed if r.concurrency_key == "k"]
    assert free.id in {r.id for r in claimed}
    # Three tasks of k wait, out of turn: claims no longer look at them.
    assert client.smembers(parked) == {b"4:acmek"}
    assert client.exists(keys) == 0
    assert await store.claim(10, NOW, TYPES) == []
    assert (await store.type_counts())["echo"] == TypeCounts(running=2, pending=3)

    await store.complete([Outcome(running.id, running.claim, result=b"")], NOW + 1)
    assert client.smembers(parked) == set()
    assert client.zrange(keys, 0, -1) == [b"k"]
    assert len(await store.claim(10, NOW + 1, TYPES)) == 1


async def test_a_round_with_limits_and_fair_turns_is_one_script_call(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store()
    await store.update_type(
        "echo",
        NOW,
        limits={"max_running": 50, "max_running_per_key": 5, "max_starts_per_second": 100},
    )
    await store.create(
        [new_task(tenant=f"t{n % 3}", concurrency_key=f"k{n % 4}") for n in range(30)], NOW
    )
    first = await store.claim(8, NOW, TYPES)
    calls: list[Any] = []
    run = store._run

    async def counted(script: Any, args: list[Any], *, once: bool = False) -> Any:
        calls.append(script)
        return await run(script, args, once=once)

    monkeypatch.setattr(store, "_run", counted)
    ended, claimed = await store.settle(
        [Outcome(r.id, r.claim, result=b"") for r in first], 8, NOW + 1, TYPES
    )
    assert (len(ended), len(claimed), len(calls)) == (8, 8, 1)


async def test_tasks_queued_by_the_previous_layout_are_claimed_after_the_upgrade(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    """The version before fair queues kept due tasks in one zset per type
    (`P:ready:<type>`, score -priority, member <ticket hex><id>), the types
    in `P:ready_types`, and no counts. Such data is moved once, and claimed
    by priority, then in the order it became due."""
    store = open_store()
    low = await store.create([new_task(tenant=t) for t in ("a", "a", "b")], NOW)
    [high] = await store.create([new_task(priority=5)], NOW)
    [other] = await store.create([new_task("sleep")], NOW)
    [delayed] = await store.create([new_task(delay=60.0)], NOW)
    [running] = await store.create([new_task(priority=9)], NOW)
    assert [r.id for r in await store.claim(1, NOW, TYPES)] == [running.id]
    await store.close()

    due = [*low, high, other]
    for record in due:
        fields = client.hmget(f"{prefix}:task:{record.id}", "queued", "type")
        client.zadd(f"{prefix}:ready:{fields[1].decode()}", {fields[0]: -record.priority})
        client.sadd(f"{prefix}:ready_types", fields[1])
    new_keys = [
        *client.scan_iter(match=f"{prefix}:fair:*"),
        f"{prefix}:type_tasks",
        f"{prefix}:layout",
    ]
    client.delete(*new_keys)

    upgraded = open_store()
    assert await upgraded.depth() == 7
    assert client.exists(f"{prefix}:ready_types", f"{prefix}:ready:echo") == 0
    assert await upgraded.type_counts() == {
        "echo": TypeCounts(running=1, pending=5),
        "sleep": TypeCounts(pending=1),
    }
    claimed = [r.id for r in await upgraded.claim(10, NOW, ["echo"])]
    assert claimed == [high.id, low[0].id, low[2].id, low[1].id]
    assert [r.id for r in await upgraded.claim(10, NOW + 61, TYPES)] == [other.id, delayed.id]
    await upgraded.complete([Outcome(running.id, 1, result=b"")], NOW + 62)
    assert (await current(upgraded, running.id)).state is State.SUCCEEDED
    assert await upgraded.type_counts() == {
        "echo": TypeCounts(running=5),
        "sleep": TypeCounts(running=1),
    }
