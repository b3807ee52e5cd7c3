"""RedisStore's list indexes: a tenant's tasks by type, label and state,
kept by every script that creates, changes or drops a task, built for tasks
stored before they existed, and scanned by ListTasks.

The layout is read straight from Redis: an index that lost or kept a wrong
entry lists wrongly only under some filters and some backlogs, so each
test compares every index with what the store says its tasks are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from conveyor_server.stores import (
    ListQuery,
    Outcome,
    RedisStore,
    State,
    TaskRecord,
)
from conveyor_server.stores.redis import _list_index
from tests.support.stores import BOOM, TYPES, current, new_task

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

    def make(*, retention_count: int = 1000, max_queue: int = 5000) -> RedisStore:
        store = RedisStore(
            redis_url, max_queue=max_queue, retention_count=retention_count, lease_seconds=30.0
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def index_key(prefix: str, tenant: str, kind: str, value: str) -> str:
    return f"{prefix}:list:{len(tenant.encode())}:{tenant}:{kind}:{value}"


def label_key(prefix: str, tenant: str, name: str, value: str) -> str:
    return index_key(prefix, tenant, "label", f"{len(name.encode())}:{name}={value}")


def members(client: redis.Redis, key: str) -> dict[str, int]:
    return {m.decode(): int(s) for m, s in client.zrange(key, 0, -1, withscores=True)}


def index_keys(client: redis.Redis, prefix: str) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=f"{prefix}:list:*", count=1000)}


def expected_indexes(prefix: str, records: list[TaskRecord]) -> dict[str, dict[str, int]]:
    """Every index key the records should be in, with its members."""
    expected: dict[str, dict[str, int]] = {}
    for r in records:
        keys = [
            index_key(prefix, r.tenant, "type", r.type),
            index_key(prefix, r.tenant, "state", str(int(r.state))),
        ]
        keys += [label_key(prefix, r.tenant, k, v) for k, v in (r.labels or {}).items()]
        for key in keys:
            expected.setdefault(key, {})[r.id] = r.seq
    return expected


async def assert_indexes_match(
    store: RedisStore, client: redis.Redis, prefix: str, ids: list[str]
) -> None:
    records = [r for r in [await store.get(i, t) for i, t in ids_with_tenants(ids)] if r]
    expected = expected_indexes(prefix, records)
    actual = {key: members(client, key) for key in index_keys(client, prefix)}
    assert actual == expected


def ids_with_tenants(ids: list[str]) -> list[tuple[str, str]]:
    return [(i.split("/", 1)[1], i.split("/", 1)[0]) for i in ids]


async def test_indexes_follow_every_change_of_a_task(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    store = open_store(retention_count=4)
    created = await store.create(
        [
            new_task("echo", labels={"team": "a", "kind": "x"}, max_attempts=3),
            new_task("sleep", labels={"team": "b"}),
            new_task("echo", tenant="t:1", labels={"a=b": "c"}),
            new_task("echo", delay=60),
            new_task("sleep", max_attempts=2),
            new_task("echo", labels={"team": "a"}),
        ],
        NOW,
    )
    ids = [f"{r.tenant}/{r.id}" for r in created]
    await assert_indexes_match(store, client, prefix, ids)

    claimed = await store.claim(3, NOW, TYPES)
    assert len(claimed) == 3
    await assert_indexes_match(store, client, prefix, ids)

    first, second, third = claimed
    await store.complete(
        [
            Outcome(first.id, first.claim, result=b""),
            Outcome(second.id, second.claim, failure=BOOM, retry_at=NOW + 30),
            Outcome(third.id, third.claim, failure=BOOM),
        ],
        NOW,
    )
    await assert_indexes_match(store, client, prefix, ids)

    await store.cancel(created[3].id, NOW)
    running = await store.claim(5, NOW, TYPES)
    assert running
    await store.requeue(running[0].id, running[0].claim, NOW)
    await assert_indexes_match(store, client, prefix, ids)

    await store.retry(third.id, NOW, third.tenant)
    await store.reap(NOW + 3600)
    await assert_indexes_match(store, client, prefix, ids)


async def test_dropped_tasks_leave_every_index(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    store = open_store(retention_count=2)
    created = await store.create(
        [new_task("echo", labels={"n": str(i)}, tenant=f"t{i % 2}") for i in range(6)], NOW
    )
    ids = [f"{r.tenant}/{r.id}" for r in created]
    for r in created:
        await store.cancel(r.id, NOW + r.seq, r.tenant)
    # Retention keeps the two that finished last; purge drops those too.
    await assert_indexes_match(store, client, prefix, ids)
    assert len(index_keys(client, prefix)) == 6
    assert await store.purge(NOW + 100) == 2
    assert index_keys(client, prefix) == set()


@pytest.mark.parametrize(
    ("rounds", "running", "finished"),
    [
        (2, 300, 400),  # each state's index within one scan (500), both over it
        (3, 700, 400),  # each state's index over one scan
    ],
)
async def test_a_filter_of_several_states_merges_their_indexes(
    open_store: OpenStore, rounds: int, running: int, finished: int
) -> None:
    """Pending and running tasks, interleaved with finished ones, page in
    creation order through their state indexes together."""
    store = open_store()
    created: list[TaskRecord] = []
    for round_ in range(rounds):
        created += await store.create([new_task() for _ in range(500)], NOW + round_)
    first = {r.id for r in await store.claim(running, NOW, TYPES)}
    second = await store.claim(finished, NOW, TYPES)
    await store.complete([Outcome(r.id, r.claim, result=b"") for r in second], NOW)
    done = {r.id for r in second}
    wanted = frozenset({State.PENDING, State.RUNNING})
    expected = [r.id for r in reversed(created) if r.id not in done]
    seen: list[str] = []
    before: int | None = None
    while True:
        page, before = await store.list_page(ListQuery(1000, states=wanted, before_seq=before))
        seen += [r.id for r in page]
        assert all(r.state in wanted for r in page)
        if before is None:
            break
    assert seen == expected
    assert len(first) == running
    assert len(expected) == 500 * rounds - finished


async def test_tasks_stored_before_the_indexes_are_built_into_them(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    """A store of an earlier version: tasks without index entries and no
    word that the indexes are built. Listing is right before the build,
    and the build indexes every task, whatever changes beside it."""
    store = open_store()
    created: list[TaskRecord] = []
    for tenant in ("", "team-a", "team:b"):
        created += await store.create(
            [new_task("echo", labels={"batch": str(i % 3)}, tenant=tenant) for i in range(1200)],
            NOW,
        )
    ids = [f"{r.tenant}/{r.id}" for r in created]
    await store.claim(10, NOW, TYPES)
    client.delete(*index_keys(client, prefix), f"{prefix}:list_index")

    later = open_store()
    query = ListQuery(5, labels=(("batch", "1"),), tenant="team:b")
    expected = [
        r.id for r in reversed(created) if r.tenant == "team:b" and r.labels == {"batch": "1"}
    ]
    page, _ = await later.list_page(query)  # starts the build, lists without indexes
    assert [r.id for r in page] == expected[:5]
    # A change while the build runs: the build and the scripts agree.
    await store.cancel(created[-1].id, NOW, created[-1].tenant)
    await later.build_list_indexes()
    assert client.get(f"{prefix}:list_index") == b"1"
    assert client.exists(f"{prefix}:list_index_build") == 0
    await assert_indexes_match(later, client, prefix, ids)
    page, _ = await later.list_page(query)
    assert [r.id for r in page] == expected[:5]


async def test_one_process_builds_at_a_time(
    open_store: OpenStore, client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_list_index, "WAIT_SECONDS", 0.05)
    store = open_store()
    [task] = await store.create([new_task(labels={"k": "v"})], NOW)
    client.delete(*index_keys(client, prefix), f"{prefix}:list_index")
    client.set(f"{prefix}:list_index_build", "another process", px=300)
    # Refused while the lease holds; built once it lapses.
    await store.build_list_indexes()
    assert client.get(f"{prefix}:list_index") == b"1"
    assert members(client, label_key(prefix, "", "k", "v")) == {task.id: task.seq}
    assert (await current(store, task.id)).state == State.PENDING


async def test_moves_within_one_call_leave_the_last_state_indexed(
    open_store: OpenStore, client: redis.Redis, prefix: str
) -> None:
    """A failure retried at once and claimed again in the same round, and
    tasks finished and dropped by retention in the same call."""
    store = open_store(retention_count=1)
    created = await store.create(
        [new_task(max_attempts=2, labels={"n": str(i)}) for i in range(3)], NOW
    )
    ids = [f"{r.tenant}/{r.id}" for r in created]
    [first] = await store.claim(1, NOW, TYPES)
    ended, claimed = await store.settle(
        [Outcome(first.id, first.claim, failure=BOOM, retry_at=NOW)], 5, NOW, TYPES
    )
    assert [r.state for r in ended] == [State.PENDING]
    assert first.id in {r.id for r in claimed}
    assert (await current(store, first.id)).state == State.RUNNING
    await assert_indexes_match(store, client, prefix, ids)

    await store.complete([Outcome(r.id, r.claim, result=b"") for r in claimed], NOW)
    # Three finished in one call, two of them dropped by it.
    assert len([r for r in [await store.get(i) for i in (t.id for t in created)] if r]) == 1
    await assert_indexes_match(store, client, prefix, ids)
    assert len(index_keys(client, prefix)) == 3
