"""Coalesced submits through a real server and the real SDK, on every store.

Coalescing is made certain, not likely: the sync tests hold the first submit
at the client's channel until the others have queued behind it, and the
asyncio tests start every submit in one turn of the loop, before any answer
can arrive. The server's own metrics count the calls that went out.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from conveyor import (
    AlreadyExists,
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    TaskHandle,
)
from tests.support.server import ServerThread, free_port

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def server(store_url: str, make_server: MakeServer) -> ServerThread:
    """A fresh server on an empty store of each kind, counting its calls."""
    return make_server(store=store_url, metrics_port=free_port())


def calls(server: ServerThread, method: str) -> int:
    """How many calls of `method` the server has answered, with any code."""
    assert server.server is not None and server.server.metrics is not None
    return int(
        sum(
            sample.value
            for family in server.server.metrics.collect()
            if family.name == "conveyor_rpcs_handled"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["method"] == method
        )
    )


class HoldFirstSubmit(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Holds the first SubmitTask of a client until `release()`, so the
    submits made meanwhile queue behind it."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self._released = threading.Event()
        self._done = False

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if details.method.endswith("/SubmitTask") and not self._done:
            self._done = True
            self.held.set()
            assert self._released.wait(30), "the first submit was never released"
        return continuation(details, request)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def held(server: ServerThread) -> Iterator[tuple[Client, HoldFirstSubmit]]:
    """A coalescing Client whose first submit is held at its channel."""
    gate = HoldFirstSubmit()
    channel = grpc.intercept_channel(grpc.insecure_channel(server.address), gate)
    client = Client._on_channel(channel, timeout=10.0)
    yield client, gate
    gate.release()
    client.close()


def queued(client: Client) -> int:
    submitter = client._submitter
    assert submitter is not None
    with submitter._lock:
        return len(submitter._queue)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.002)


def test_each_caller_gets_its_own_outcome_from_one_batch(
    server: ServerThread, held: tuple[Client, HoldFirstSubmit]
) -> None:
    client, gate = held
    run = {"run": uuid.uuid4().hex}
    key = uuid.uuid4().hex
    with Client(server.address, timeout=10.0, coalesce_submits=False) as plain:
        earlier = plain.submit("echo", {"n": 0}, idempotency_key=key)
        with pytest.raises(InvalidArgument) as lone_invalid:
            plain.submit("echo", {"x": math.nan})
        with pytest.raises(AlreadyExists) as lone_conflict:
            plain.submit("echo", {"n": 1}, idempotency_key=key)
    # A refusal is counted just after it is sent.
    wait_until(lambda: calls(server, "SubmitTask") == 3)

    def submit(kind: str) -> TaskHandle:
        if kind == "invalid":
            return client.submit("echo", {"x": math.nan}, labels=run)
        if kind == "conflict":
            return client.submit("echo", {"n": 1}, idempotency_key=key, labels=run)
        return client.submit("echo", {"kind": kind}, labels=run)

    kinds = ["first", "a", "invalid", "b", "conflict", "c", "d", "e"]
    with futures.ThreadPoolExecutor(len(kinds)) as pool:
        first = pool.submit(submit, "first")
        assert gate.held.wait(30)
        rest = {kind: pool.submit(submit, kind) for kind in kinds[1:]}
        wait_until(lambda: queued(client) == len(rest))
        gate.release()
        outcomes = {"first": first, **rest}
        for kind in ("invalid", "conflict"):
            with pytest.raises((InvalidArgument, AlreadyExists)) as caught:
                outcomes[kind].result(30)
            lone = lone_invalid if kind == "invalid" else lone_conflict
            assert type(caught.value) is type(lone.value)
            assert str(caught.value) == str(lone.value)
            assert caught.value.field_violations == lone.value.field_violations
        handles = {kind: outcomes[kind].result(30) for kind in ("first", "a", "b", "c", "d", "e")}

    invalid = outcomes["invalid"].exception()
    assert isinstance(invalid, InvalidArgument)
    assert [field for field, _ in invalid.field_violations] == ["payload.x"]
    assert earlier.id in str(outcomes["conflict"].exception())
    for kind, handle in handles.items():
        assert client.get(handle.id).payload == {"kind": kind}
    assert len({handle.id for handle in handles.values()}) == 6
    assert calls(server, "SubmitTask") == 3 + 1  # the first, alone
    assert calls(server, "BatchSubmitTasks") == 1  # the seven behind it, together
    listed = client.list(labels=run)
    assert sorted(task.id for task in listed) == sorted(handle.id for handle in handles.values())


def test_a_queued_caller_gives_up_at_its_deadline_and_nothing_is_created(
    held: tuple[Client, HoldFirstSubmit],
) -> None:
    client, gate = held
    run = {"run": uuid.uuid4().hex}
    with futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.submit, "echo", {}, labels=run)
        assert gate.held.wait(30)
        late = pool.submit(client.submit, "echo", {"late": True}, labels=run, rpc_timeout=0.2)
        with pytest.raises(DeadlineExceeded, match="was not created"):
            late.result(30)
        gate.release()
        handle = first.result(30)
    assert [task.id for task in client.list(labels=run)] == [handle.id]
    # The client goes on coalescing.
    assert client.submit("echo", {}).id


def test_one_threads_submits_keep_their_order(
    server: ServerThread, held: tuple[Client, HoldFirstSubmit]
) -> None:
    client, gate = held
    gate.release()
    mine = {"run": uuid.uuid4().hex}
    others = {"run": uuid.uuid4().hex}

    def many(labels: dict[str, str]) -> list[str]:
        return [client.submit("echo", {"i": i}, labels=labels).id for i in range(40)]

    with futures.ThreadPoolExecutor(4) as pool:
        noise = [pool.submit(many, others) for _ in range(3)]
        ids = many(mine)
        for future in noise:
            future.result(30)
    newest_first = [task.id for task in client.list(labels=mine)]
    assert newest_first[::-1] == ids


async def _gathered(client: AsyncClient, *submits: Callable[[], Any]) -> list[Any]:
    """Start every submit in this turn of the loop: the first goes out alone,
    the others queue behind it."""
    return await asyncio.gather(*(submit() for submit in submits), return_exceptions=True)


def test_async_submits_coalesce_each_with_its_own_outcome(server: ServerThread) -> None:
    same, other = uuid.uuid4().hex, uuid.uuid4().hex

    async def main() -> list[Any]:
        async with AsyncClient(server.address, timeout=10.0) as client:
            return await _gathered(
                client,
                lambda: client.submit("echo", {"n": 0}),
                lambda: client.submit("echo", {"n": 1}, idempotency_key=same),
                lambda: client.submit("echo", {"n": 2}),
                lambda: client.submit("echo", {"n": 1}, idempotency_key=same),
                lambda: client.submit("echo", {"n": 3}, idempotency_key=other),
                lambda: client.submit("echo", {"n": 4}, idempotency_key=other),
                lambda: client.submit("echo", {"x": math.nan}),
            )

    zero, keyed, two, repeat, winner, loser, invalid = asyncio.run(main())
    assert isinstance(invalid, InvalidArgument)
    assert [field for field, _ in invalid.field_violations] == ["payload.x"]
    assert keyed.id == repeat.id
    assert isinstance(loser, AlreadyExists) and other in str(loser)
    assert winner.task.payload == {"n": 3}
    assert zero.task.payload == {"n": 0} and two.task.payload == {"n": 2}
    assert calls(server, "SubmitTask") == 1
    assert calls(server, "BatchSubmitTasks") == 1


def test_a_cancelled_async_submit_still_queued_is_never_created(server: ServerThread) -> None:
    run = {"run": uuid.uuid4().hex}

    async def main() -> list[str]:
        async with AsyncClient(server.address, timeout=10.0) as client:
            tasks = [
                asyncio.create_task(client.submit("echo", {"i": i}, labels=run)) for i in range(5)
            ]
            await asyncio.sleep(0)  # every submit has started: one sent, four queued
            tasks[2].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(done[2], asyncio.CancelledError)
            listed = [task async for task in client.list(labels=run)]
            return [task.payload["i"] for task in listed]

    assert sorted(asyncio.run(main())) == [0, 1, 3, 4]
    assert calls(server, "BatchSubmitTasks") == 1


def test_the_off_switch_sends_each_submit_alone(server: ServerThread) -> None:
    async def main() -> None:
        async with AsyncClient(server.address, timeout=10.0, coalesce_submits=False) as client:
            await asyncio.gather(*(client.submit("echo", {"i": i}) for i in range(6)))

    asyncio.run(main())
    with (
        Client(server.address, coalesce_submits=False) as client,
        futures.ThreadPoolExecutor(4) as pool,
    ):
        list(pool.map(lambda i: client.submit("echo", {"i": i}), range(8)))
    assert calls(server, "SubmitTask") == 14
    assert calls(server, "BatchSubmitTasks") == 0
