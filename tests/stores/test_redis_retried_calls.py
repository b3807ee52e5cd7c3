"""RedisStore calls that Redis may run twice: when a connection drops after
a script ran but before its reply arrived, the client sends the script
again on a fresh connection. A call whose second run would act again
carries a token, and its second run answers as the first did.

The first tests send each script twice the way the client's retry does
(same keys, same arguments); the last drops a reply on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from conveyor_server.stores import CancelOutcome, ListQuery, Outcome, RedisStore, State
from conveyor_server.stores.redis.scripts import CALL_MEMORY_SECONDS
from tests.support.stores import BOOM, TYPES, current, new_task

NOW = 1_700_000_000.0


def sent_twice(script: Any) -> Callable[..., Any]:
    """The script as the client's retry runs it: once, its reply lost, then
    again with the same keys and arguments, whose reply the caller gets."""

    async def call(**kwargs: Any) -> Any:
        await script(**kwargs)
        return await script(**kwargs)

    return call


def send_twice(store: RedisStore, script: str) -> None:
    setattr(store, script, sent_twice(getattr(store, script)))


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_url, max_queue=100, retention_count=100, lease_seconds=30.0)
    yield opened
    await opened.close()


async def test_a_create_sent_twice_creates_once(store: RedisStore) -> None:
    send_twice(store, "_create")
    [task] = await store.create([new_task()], NOW)
    assert await store.depth() == 1
    page, _ = await store.list_page(ListQuery(page_size=10))
    assert [r.id for r in page] == [task.id]
    assert (await current(store, task.id)).seq == task.seq
    [claimed] = await store.claim(10, NOW, TYPES)
    assert claimed.id == task.id
    assert await store.claim(10, NOW, TYPES) == []


async def test_a_claim_sent_twice_claims_once(store: RedisStore) -> None:
    first, second = await store.create([new_task(), new_task()], NOW)
    send_twice(store, "_claim")
    [claimed] = await store.claim(1, NOW, TYPES)
    assert (claimed.id, claimed.attempt, claimed.claim) == (first.id, 1, 1)
    # The other task was not claimed by a run whose answer nobody heard.
    assert (await current(store, second.id)).state is State.PENDING
    assert (await current(store, first.id)).claim == 1


async def test_the_answer_of_a_call_is_kept_for_a_while_only(
    store: RedisStore, redis_url: str
) -> None:
    await store.create([new_task()], NOW)
    prefix = redis_url.split("prefix=")[1]
    with redis.Redis.from_url(redis_url.split("?")[0]) as client:
        [kept] = client.keys(f"{prefix}:call:*")
        assert 0 < client.pttl(kept) <= CALL_MEMORY_SECONDS * 1000


async def test_a_complete_sent_twice_answers_as_the_first(store: RedisStore) -> None:
    [task] = await store.create([new_task(max_attempts=2)], NOW)
    await store.claim(1, NOW, TYPES)
    send_twice(store, "_complete")
    [retried] = await store.complete([Outcome(task.id, 1, failure=BOOM, retry_at=NOW)], NOW)
    assert (retried.id, retried.state) == (task.id, State.PENDING)


async def test_a_settle_sent_twice_completes_and_claims_once(store: RedisStore) -> None:
    first, second, third = await store.create([new_task(max_attempts=2)] * 3, NOW)
    await store.claim(1, NOW, TYPES)
    send_twice(store, "_settle")
    ended, claimed = await store.settle(
        [Outcome(first.id, 1, failure=BOOM, retry_at=NOW)], 1, NOW, TYPES
    )
    assert [(r.id, r.state) for r in ended] == [(first.id, State.PENDING)]
    assert [(r.id, r.claim) for r in claimed] == [(second.id, 1)]
    # The second run changed nothing: the retry was queued once, one more
    # task was claimed, not two.
    assert (await current(store, first.id)).version == ended[0].version
    assert (await current(store, third.id)).state is State.PENDING
    assert [r.id for r in await store.claim(5, NOW, TYPES)] == [third.id, first.id]


async def test_a_cancel_sent_twice_says_what_it_did(store: RedisStore) -> None:
    [task] = await store.create([new_task()], NOW)
    send_twice(store, "_cancel")
    cancelled = await store.cancel(task.id, NOW)
    assert cancelled is not None
    assert (cancelled.outcome, cancelled.record.state) == (CancelOutcome.CANCELLED, State.CANCELLED)


async def test_a_retry_sent_twice_is_not_refused(store: RedisStore) -> None:
    [task] = await store.create([new_task()], NOW)
    await store.cancel(task.id, NOW)
    send_twice(store, "_retry")
    retried = await store.retry(task.id, NOW + 1)
    assert retried is not None and retried.state is State.PENDING
    assert await store.depth() == 1


# -- a reply lost on the wire ---------------------------------------------------


class ReplyDropper:
    """A TCP proxy to Redis that, once armed, closes the client's connection
    instead of passing on the next reply: the command ran, its answer is lost."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.armed = False
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        up = asyncio.create_task(self._pipe(reader, upstream_writer, replies=False))
        down = asyncio.create_task(self._pipe(upstream_reader, writer, replies=True))
        self._pipes |= {up, down}
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for pipe in (up, down):
            pipe.cancel()
        for end in (writer, upstream_writer):
            end.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if replies and self.armed:
                    self.armed = False
                    self.dropped += 1
                    return
                writer.write(data)
                await writer.drain()


async def test_a_claim_whose_reply_is_lost_is_claimed_once(
    redis_server: tuple[str, int], redis_url: str
) -> None:
    dropper = ReplyDropper(*redis_server)
    port = await dropper.start()
    host, real_port = redis_server
    url = redis_url.replace(f"{host}:{real_port}", f"127.0.0.1:{port}")
    store = RedisStore(url, max_queue=100, retention_count=100, lease_seconds=30.0)
    try:
        first, second = await store.create([new_task(), new_task()], NOW)
        assert await store.claim(0, NOW, TYPES) == []  # the script is loaded: one round trip next
        dropper.armed = True
        [claimed] = await store.claim(1, NOW, TYPES)
        assert dropper.dropped == 1
        assert (claimed.id, claimed.attempt) == (first.id, 1)
        assert (await current(store, second.id)).state is State.PENDING

        dropper.armed = True
        [again] = await store.create([new_task()], NOW)
        assert dropper.dropped == 2
        assert await store.depth() == 3
        assert (await current(store, again.id)).state is State.PENDING
    finally:
        await store.close()
        await dropper.close()
