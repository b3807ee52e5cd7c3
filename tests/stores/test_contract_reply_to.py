"""The TaskStore contract on reply_to, for every store: a task keeps the
reply_to it was created with through every change, an idempotent repeat
keeps the first one's, and a feed reader with a reply_to gets the changes
of the tasks created with it (or named in its ids) and of no others."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor_server.stores import (
    FeedChange,
    FeedFilter,
    FeedReader,
    ListQuery,
    Outcome,
    Progress,
    RedisStore,
    State,
    TaskRecord,
    TaskStore,
)
from tests.support.stores import NOTICE_SECONDS, TYPES, current, new_task, value_bytes

TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


@pytest.fixture
def now() -> float:
    return time.time()


async def read(reader: FeedReader) -> FeedChange:
    return await asyncio.wait_for(reader.next(), NOTICE_SECONDS)


async def seen_until(reader: FeedReader, task_id: str, state: State) -> list[tuple[str, State]]:
    """(id, state) of each change read, up to `task_id` reaching `state`."""
    got: list[tuple[str, State]] = []
    while True:
        change = await read(reader)
        assert change.record is not None, "no reset expected"
        got.append((change.record.id, change.record.state))
        if got[-1] == (task_id, state):
            return got


async def nothing_more(reader: FeedReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.next(), 0.3)


async def run_to_success(store: TaskStore, task_id: str, now: float) -> None:
    """Claim the next due task, which must be `task_id`, and complete it."""
    [claimed] = await store.claim(1, now, TYPES)
    assert claimed.id == task_id
    await store.complete([Outcome(task_id, claimed.claim, result=value_bytes("ok"))], now)


async def test_a_task_keeps_its_reply_to_through_every_change(store: TaskStore, now: float) -> None:
    [task, plain] = await store.create([new_task(reply_to="client-1.a:b"), new_task()], now)
    task_id, plain_id = task.id, plain.id
    assert (task.reply_to, plain.reply_to) == ("client-1.a:b", None)
    [claimed, _] = await store.claim(2, now, TYPES)
    assert claimed.reply_to == "client-1.a:b"
    await store.set_progress([(task_id, 1, Progress(50.0))], now + 1)
    [done] = await store.complete([Outcome(task_id, 1, result=value_bytes("ok"))], now + 2)
    assert done.reply_to == "client-1.a:b"
    assert (await current(store, task_id)).reply_to == "client-1.a:b"
    assert (await current(store, plain_id)).reply_to is None
    page, _ = await store.list_page(ListQuery(page_size=10))
    assert {(r.id, r.reply_to) for r in page} == {(task_id, "client-1.a:b"), (plain_id, None)}


async def test_an_idempotent_repeat_keeps_the_first_reply_to(store: TaskStore, now: float) -> None:
    # The same request (fingerprint) from two clients: one task, the first's.
    [first] = await store.create([new_task(key="k", reply_to="client-a")], now)
    first_id = first.id
    [again] = await store.create([new_task(key="k", reply_to="client-b")], now + 1)
    assert (again.id, again.reply_to) == (first_id, "client-a")
    one, two = await store.create(
        [new_task(key="j", reply_to="client-b"), new_task(key="j", reply_to="client-a")], now
    )
    assert one.id == two.id and two.reply_to == "client-b"
    assert (await current(store, first_id)).reply_to == "client-a"


async def test_a_reply_to_reader_gets_its_tasks_and_no_others(store: TaskStore, now: float) -> None:
    reader = await store.follow(FeedFilter(reply_to="client-1"))
    other = await store.follow(FeedFilter(reply_to="client-2"))
    try:
        [mine, theirs, _] = await store.create(
            [new_task(reply_to="client-1"), new_task(reply_to="client-2"), new_task()], now
        )
        mine_id, theirs_id = mine.id, theirs.id
        await run_to_success(store, mine_id, now + 1)
        # A reader behind may get only the latest of the three changes.
        got = await seen_until(reader, mine_id, State.SUCCEEDED)
        assert {task_id for task_id, _ in got} == {mine_id}
        await nothing_more(reader)
        change = await read(other)
        assert change.record is not None and change.record.id == theirs_id
        await nothing_more(other)
    finally:
        reader.close()
        other.close()


async def test_a_reply_to_reader_also_gets_its_ids_and_the_other_filters_apply(
    store: TaskStore, now: float
) -> None:
    [foreign, unrelated] = await store.create([new_task(), new_task()], now)
    foreign_id = foreign.id
    reader = await store.follow(
        FeedFilter(reply_to="client-1", ids=frozenset({foreign_id}), states=TERMINAL)
    )
    try:
        [mine] = await store.create([new_task(reply_to="client-1")], now)
        mine_id = mine.id
        await store.cancel(unrelated.id, now + 1)
        await store.cancel(foreign_id, now + 1)
        await run_to_success(store, mine_id, now + 2)
        got = [await read(reader), await read(reader)]
        assert [(c.record.id, c.record.state) for c in got if c.record is not None] == [
            (foreign_id, State.CANCELLED),
            (mine_id, State.SUCCEEDED),
        ]
        await nothing_more(reader)
    finally:
        reader.close()


async def test_a_reply_to_reaches_only_its_tenants_tasks(store: TaskStore, now: float) -> None:
    reader = await store.follow(FeedFilter(tenant="acme", reply_to="client-1"))
    try:
        await store.create([new_task(tenant="globex", reply_to="client-1")], now)
        await store.create([new_task(reply_to="client-1")], now)
        [mine] = await store.create([new_task(tenant="acme", reply_to="client-1")], now)
        change = await read(reader)
        assert change.record is not None
        assert (change.record.id, change.record.tenant) == (mine.id, "acme")
        await nothing_more(reader)
    finally:
        reader.close()


async def test_a_reply_to_reader_resumes_from_a_cursor_with_its_tasks_only(
    store: TaskStore, now: float
) -> None:
    reader = await store.follow(FeedFilter(reply_to="client-1"))
    [first] = await store.create([new_task(reply_to="client-1")], now)
    start = await read(reader)
    assert start.record is not None and start.record.id == first.id
    reader.close()

    # While nobody reads: one of its tasks, one of another client's.
    [missed, _] = await store.create(
        [new_task(reply_to="client-1"), new_task(reply_to="client-2")], now + 1
    )
    await asyncio.sleep(0.3)
    resumed = await store.follow(FeedFilter(reply_to="client-1"), start.cursor)
    try:
        change = await read(resumed)
        assert change.record is not None and change.record.id == missed.id
        await nothing_more(resumed)
    finally:
        resumed.close()


async def test_many_reply_to_readers_each_get_their_own(store: TaskStore, now: float) -> None:
    names = [f"client-{n}" for n in range(20)]
    readers = {name: await store.follow(FeedFilter(reply_to=name)) for name in names}
    try:
        records = await store.create([new_task(reply_to=name) for name in names], now)
        ids = {name: record.id for name, record in zip(names, records, strict=True)}
        for name, reader in readers.items():
            change = await read(reader)
            assert change.record is not None and change.record.id == ids[name], name
            await nothing_more(reader)
    finally:
        for reader in readers.values():
            reader.close()


@pytest.mark.stores("redis")
async def test_a_reply_to_reader_on_one_instance_sees_tasks_run_on_another(
    store: TaskStore, second_store: TaskStore, now: float
) -> None:
    reader = await second_store.follow(FeedFilter(reply_to="client-1", states=TERMINAL))
    try:
        [mine, other] = await store.create(
            [new_task(reply_to="client-1"), new_task(reply_to="client-2")], now
        )
        mine_id = mine.id
        await store.claim(2, now, TYPES)
        await store.set_progress([(mine_id, 1, Progress(10.0))], now + 1)
        await store.complete(
            [
                Outcome(other.id, 1, result=value_bytes("ok")),
                Outcome(mine_id, 1, result=value_bytes("ok")),
            ],
            now + 2,
        )
        change = await read(reader)
        assert change.record is not None
        assert (change.record.id, change.record.state, change.record.reply_to) == (
            mine_id,
            State.SUCCEEDED,
            "client-1",
        )
        await nothing_more(reader)
    finally:
        reader.close()


@pytest.mark.stores("redis")
async def test_a_redis_follower_reads_only_the_records_of_its_readers_reply_to(
    store: TaskStore, second_store: TaskStore, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each feed entry names the reply_to of its changes' tasks, so that a
    # replica reads the records its readers want and not every change.
    assert isinstance(second_store, RedisStore)
    stream = second_store._stream
    read_ids: list[str] = []
    read_records = stream._read

    async def recording(task_ids: list[str]) -> list[TaskRecord]:
        read_ids.extend(task_ids)
        return await read_records(task_ids)

    monkeypatch.setattr(stream, "_read", recording)
    reader = await second_store.follow(FeedFilter(reply_to="client-1"))
    try:
        [theirs, plain] = await store.create([new_task(reply_to="client-2"), new_task()], now)
        [mine] = await store.create([new_task(reply_to="client-1")], now)
        change = await read(reader)
        assert change.record is not None and change.record.id == mine.id
        assert read_ids == [mine.id]

        # An entry that does not name its reply_to (as versions before it
        # wrote them): the record is read to tell, and not delivered.
        assert isinstance(store, RedisStore)
        await store._redis.xadd(f"{store._prefix}:feed", {"c": f"{theirs.id}:1"})
        [again] = await store.create([new_task(reply_to="client-1")], now)
        change = await read(reader)
        assert change.record is not None and change.record.id == again.id
        assert read_ids[0] == mine.id
        assert sorted(read_ids[1:]) == sorted([theirs.id, again.id])
        assert plain.id not in read_ids
    finally:
        reader.close()


@pytest.mark.stores("redis")
async def test_a_redis_reader_that_comes_during_a_read_gets_the_changes_it_wants(
    store: TaskStore, second_store: TaskStore, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client reopening its stream from a cursor while the follower reads
    # the records of a batch of changes: the new reader's changes in that
    # batch were not asked for, and must still reach it.
    assert isinstance(second_store, RedisStore)
    stream = second_store._stream
    first = await second_store.follow(FeedFilter(reply_to="client-1"))
    cursor = stream.feed.cursor(stream.feed.head)
    late: list[FeedReader] = []
    read_records = stream._read

    async def attach_during_the_read(task_ids: list[str]) -> list[TaskRecord]:
        if not late:
            late.append(await second_store.follow(FeedFilter(reply_to="client-2"), cursor))
        return await read_records(task_ids)

    monkeypatch.setattr(stream, "_read", attach_during_the_read)
    try:
        # One create: one feed entry with both changes.
        [mine, theirs] = await store.create(
            [new_task(reply_to="client-1"), new_task(reply_to="client-2")], now
        )
        change = await read(first)
        assert change.record is not None and change.record.id == mine.id
        assert late
        change = await read(late[0])
        assert change.record is not None and change.record.id == theirs.id
    finally:
        first.close()
        for reader in late:
            reader.close()
