"""The TaskStore contract on reply_to, for every store: a task keeps the
reply_to it was created with through every change, and an idempotent
repeat keeps the first one's."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor_server.stores import (
    FeedChange,
    FeedReader,
    ListQuery,
    Outcome,
    Progress,
    State,
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
