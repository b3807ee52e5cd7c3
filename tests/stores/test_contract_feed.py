"""The TaskStore contract on the change feed, for every store: every
durable change reaches a reader once, in order per task; a slow reader
holds the latest state of each task, never a backlog; a reader resumes from
a cursor without gaps or duplicates, and is told to re-list (a reset) when
the changes after its cursor are no longer known."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor_server.stores import (
    FeedChange,
    FeedFilter,
    FeedReader,
    Outcome,
    Progress,
    RedisStore,
    State,
    TaskStore,
    _feed,
)
from tests.stores.conftest import StoreOpener
from tests.support.stores import NOTICE_SECONDS, TYPES, new_task, value_bytes

EVERYTHING = FeedFilter()


@pytest.fixture
def now() -> float:
    return time.time()


async def read(reader: FeedReader) -> FeedChange:
    return await asyncio.wait_for(reader.next(), NOTICE_SECONDS)


async def read_all(reader: FeedReader, count: int) -> list[FeedChange]:
    return [await read(reader) for _ in range(count)]


async def nothing_more(reader: FeedReader) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.next(), 0.3)


def seen(changes: list[FeedChange]) -> list[tuple[str, int]]:
    return [(c.record.id, c.record.version) for c in changes if c.record is not None]


async def test_every_change_reaches_a_reader_once_in_order(store: TaskStore, now: float) -> None:
    reader = await store.follow(EVERYTHING)
    try:
        [task] = await store.create([new_task()], now)
        # Records may be live objects: each is checked as it comes.
        [created] = await read_all(reader, 1)
        assert created.record is not None
        assert (created.record.id, created.record.state) == (task.id, State.PENDING)
        got = seen([created])
        await store.claim(1, now, TYPES)
        [running] = await read_all(reader, 1)
        assert running.record is not None and running.record.state is State.RUNNING
        got += seen([running])
        await store.set_progress([(task.id, 1, Progress(50.0, "half"))], now + 1)
        [half] = await read_all(reader, 1)
        assert half.record is not None and half.record.progress == Progress(50.0, "half")
        got += seen([half])
        await store.complete([Outcome(task.id, 1, result=value_bytes("ok"))], now + 2)
        [done] = await read_all(reader, 1)
        assert done.record is not None and done.record.state is State.SUCCEEDED
        assert done.record.result == value_bytes("ok")
        got += seen([done])
        assert got == [(task.id, v) for v in (1, 2, 3, 4)]
        cursors = [c.cursor for c in (created, running, half, done)]
        assert len(set(cursors)) == 4
        await nothing_more(reader)
    finally:
        reader.close()


async def test_a_slow_reader_gets_the_latest_of_each_task_in_position_order(
    store: TaskStore, now: float
) -> None:
    reader = await store.follow(EVERYTHING)
    try:
        first, second = await store.create([new_task(), new_task("sleep")], now)
        await store.claim(1, now, ["echo"])
        for step in range(1, 4):
            await store.set_progress([(first.id, 1, Progress(step * 10.0))], now + step)
        await asyncio.sleep(0.3)  # every change is durable and published
        # The second task last changed before the first: it comes first.
        changes = await read_all(reader, 2)
        assert seen(changes) == [(second.id, 1), (first.id, 5)]
        assert changes[0].cursor != changes[1].cursor
        assert changes[1].record is not None
        assert changes[1].record.progress == Progress(30.0)
        await nothing_more(reader)
    finally:
        reader.close()


async def test_a_reader_sees_only_what_its_filter_matches(store: TaskStore, now: float) -> None:
    readers = {
        "tenant b": await store.follow(FeedFilter(tenant="b")),
        "type sleep": await store.follow(FeedFilter(type="sleep")),
        "label team=a": await store.follow(FeedFilter(labels=(("team", "a"),))),
        "running": await store.follow(FeedFilter(states=frozenset({State.RUNNING}))),
    }
    try:
        echo, sleeper, labelled = await store.create(
            [new_task(), new_task("sleep"), new_task(labels={"team": "a", "x": "y"})], now
        )
        [other_tenant] = await store.create([new_task(tenant="b")], now)
        by_id = await store.follow(FeedFilter(ids=frozenset({echo.id, "unknown"})))
        readers["ids"] = by_id
        await store.claim(1, now, ["echo"])  # the first echo task
        expected = {
            "tenant b": [(other_tenant.id, 1)],
            "type sleep": [(sleeper.id, 1)],
            "label team=a": [(labelled.id, 1)],
            "running": [(echo.id, 2)],
            "ids": [(echo.id, 2)],
        }
        for name, reader in readers.items():
            got = seen(await read_all(reader, len(expected[name])))
            assert got == expected[name], name
            await nothing_more(reader)
    finally:
        for reader in readers.values():
            reader.close()


async def test_a_reader_resumes_from_a_cursor_without_gaps_or_duplicates(
    store: TaskStore, now: float
) -> None:
    reader = await store.follow(EVERYTHING)
    first, second, third = await store.create([new_task(), new_task(), new_task()], now)
    changes = await read_all(reader, 3)
    cursor = changes[1].cursor  # the second task's creation
    reader.close()

    # While nobody reads: the third task's creation is not yet delivered
    # under that cursor, the first changes twice, a new task appears.
    await store.claim(1, now, TYPES)
    await store.set_progress([(first.id, 1, Progress(10.0))], now + 1)
    [fourth] = await store.create([new_task()], now + 2)
    await asyncio.sleep(0.3)

    resumed = await store.follow(EVERYTHING, cursor)
    try:
        got = await read_all(resumed, 3)
        assert seen(got) == [(third.id, 1), (first.id, 3), (fourth.id, 1)]
        await nothing_more(resumed)
        # Live changes follow the replayed ones.
        await store.cancel(second.id, now + 3)
        [cancelled] = await read_all(resumed, 1)
        assert seen([cancelled]) == [(second.id, 2)]
    finally:
        resumed.close()

    # Resuming from the latest cursor gives nothing old.
    again = await store.follow(EVERYTHING, cancelled.cursor)
    try:
        await nothing_more(again)
    finally:
        again.close()


async def test_a_cursor_from_elsewhere_starts_with_a_reset(store: TaskStore, now: float) -> None:
    # Not a cursor; another feed's; a position this feed never reached.
    for cursor in ("not a cursor", "zz.1", "r.99999999999999.0.0"):
        reader = await store.follow(EVERYTHING, cursor)
        try:
            change = await read(reader)
            assert change.reset and change.record is None
            # Carrying on from the reset's cursor misses nothing after it.
            [task] = await store.create([new_task()], now)
            assert seen(await read_all(reader, 1)) == [(task.id, 1)]
        finally:
            reader.close()


async def test_a_cursor_older_than_what_is_kept_starts_with_a_reset(
    store_url: str, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_feed, "RING_SIZE", 3)
    opener = StoreOpener(store_url)
    store = opener()
    try:
        reader = await store.follow(EVERYTHING)
        await store.create([new_task()], now)
        [old] = await read_all(reader, 1)
        reader.close()
        for _ in range(5):
            await store.create([new_task()], now)
        if isinstance(store, RedisStore):
            # Redis keeps about FEED_LENGTH entries; trim it as it would.
            redis = store._redis
            await redis.xtrim(f"{store._prefix}:feed", maxlen=2, approximate=False)
        else:
            await asyncio.sleep(0.3)
        resumed = await store.follow(EVERYTHING, old.cursor)
        try:
            change = await read(resumed)
            assert change.reset
            [task] = await store.create([new_task()], now)
            assert seen(await read_all(resumed, 1)) == [(task.id, 1)]
        finally:
            resumed.close()
    finally:
        await opener.close_all()


@pytest.mark.stores("redis")
async def test_a_reader_on_one_instance_sees_changes_made_on_another(
    store: TaskStore, second_store: TaskStore, make_store: StoreOpener, now: float
) -> None:
    reader = await second_store.follow(EVERYTHING)
    try:
        [task] = await store.create([new_task()], now)
        await store.claim(1, now, TYPES)
        await store.complete([Outcome(task.id, 1, result=value_bytes("ok"))], now + 1)
        got = await read_all(reader, 1)
        # Read together, the three changes may arrive as the latest.
        while got[-1].record is not None and got[-1].record.state is not State.SUCCEEDED:
            got += await read_all(reader, 1)
        versions = [v for _, v in seen(got)]
        assert versions == sorted(set(versions)) and versions[-1] == 3
    finally:
        reader.close()
    # A cursor from one instance is good on a third.
    third = make_store()
    resumed = await third.follow(EVERYTHING, got[0].cursor)
    try:
        if versions[0] < 3:
            assert seen(await read_all(resumed, 1)) == [(task.id, 3)]
        await nothing_more(resumed)
    finally:
        resumed.close()


@pytest.mark.stores("redis")
async def test_a_reader_after_an_idle_spell_sees_every_change(store: TaskStore, now: float) -> None:
    # Nobody watching: the store stops reading its feed (after a read of up
    # to a second); a new reader starts it again.
    first = await store.follow(EVERYTHING)
    first.close()
    await asyncio.sleep(1.5)
    await store.create([new_task()], now)  # made while nobody watched
    reader = await store.follow(EVERYTHING)
    try:
        [task] = await store.create([new_task()], now)
        assert seen(await read_all(reader, 1)) == [(task.id, 1)]
        await nothing_more(reader)
    finally:
        reader.close()
