"""RedisStore dependencies beyond the shared contract: across processes (two
RedisStore instances on one prefix), the keys they leave behind, and task
hashes without the fields dependencies added."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from conveyor_server.stores import Outcome, QueueFull, State, TaskRecord, TaskStore, TypeCounts
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

# The task hash fields that dependencies and concurrency keys added.
NEW_FIELDS = (b"concurrency_key", b"depends_on", b"waiting", b"run_on_dependency_failure")


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url.split("?")[0]) as connection:
        yield connection


@pytest.fixture
def prefix(redis_url: str) -> str:
    return redis_url.split("prefix=")[1]


async def run_to_end(store: TaskStore, now: float, *, succeed: bool = True) -> TaskRecord:
    """Claim the one due task and end it: SUCCEEDED, or FAILED for good."""
    [claimed] = await store.claim(1, now, TYPES)
    if succeed:
        outcome = Outcome(claimed.id, claimed.claim, result=value_bytes("ok"))
    else:
        outcome = Outcome(claimed.id, claimed.claim, failure=BOOM)
    [ended] = await store.complete([outcome], now)
    return ended


async def test_an_index_to_an_idempotent_repeat_names_the_existing_task(
    store: TaskStore, now: float
) -> None:
    [existing] = await store.create([new_task(key="k")], now)
    repeat, waiting = await store.create(
        [new_task(key="k"), new_task(depends_on_requests=(0,))], now
    )
    assert repeat.id == existing.id
    assert (waiting.depends_on, waiting.waiting) == ((existing.id,), 1)


async def test_waiting_tasks_count_toward_the_queue_limit(
    make_store: StoreOpener, now: float
) -> None:
    store = make_store(max_queue=2)
    await store.create([new_task(), new_task(depends_on_requests=(0,))], now)
    with pytest.raises(QueueFull):
        await store.create([new_task()], now)


async def test_a_dependency_another_process_completes_releases_the_task(
    store: TaskStore, second_store: TaskStore, now: float
) -> None:
    listener = RecordingListener()
    store.attach(listener)
    _, second = await store.create([new_task(), new_task(depends_on_requests=(0,))], now)
    told = listener.work
    await run_to_end(second_store, now)
    # Word of the released task reaches the first process.
    await eventually(lambda: listener.work > told, "work announced")
    [claimed] = await store.claim(5, now, TYPES)
    assert claimed.id == second.id


async def test_ended_dependencies_leave_no_keys(
    store: TaskStore, client: redis.Redis, prefix: str, now: float
) -> None:
    created = await store.create(
        [new_task(), new_task(depends_on_requests=(0,)), new_task(depends_on_requests=(1,))], now
    )
    assert client.smembers(f"{prefix}:dependents:{created[0].id}") == {created[1].id.encode()}
    await run_to_end(store, now, succeed=False)
    assert list(client.scan_iter(f"{prefix}:dependents:*")) == []


async def test_hashes_without_the_new_fields_read_as_before(
    store: TaskStore, client: redis.Redis, prefix: str, now: float
) -> None:
    # A task without a key or dependencies is stored as the previous
    # version stored every task: none of the new fields.
    [task] = await store.create([new_task()], now)
    assert not set(client.hkeys(f"{prefix}:task:{task.id}")) & set(NEW_FIELDS)
    record = await current(store, task.id)
    assert (record.depends_on, record.waiting, record.run_on_dependency_failure) == (None, 0, False)
    assert record.concurrency_key is None
    [claimed] = await store.claim(1, now, TYPES)
    assert (claimed.id, claimed.waiting) == (task.id, 0)


async def test_the_concurrency_key_is_kept(store: TaskStore, now: float) -> None:
    [created] = await store.create([new_task(concurrency_key="acme")], now)
    assert created.concurrency_key == "acme"
    assert (await current(store, created.id)).concurrency_key == "acme"


async def test_waiting_tasks_count_as_pending_of_their_type(store: TaskStore, now: float) -> None:
    [failed] = await store.create([new_task("sleep")], now)
    await run_to_end(store, now, succeed=False)
    root, _, cancelled = await store.create(
        [new_task(), new_task(depends_on_requests=(0,)), new_task(depends_on=(failed.id,))], now
    )
    assert cancelled.state is State.CANCELLED
    assert (await store.type_counts())["echo"] == TypeCounts(running=0, pending=2)
    await store.cancel(root.id, now)
    assert (await store.type_counts()).get("echo", TypeCounts()) == TypeCounts()
    assert await store.depth() == 0
