"""The shared result stream through a real server on every store: the waits
of a client (`wait`, `result`, `wait_all`, `as_completed`) share one
WatchTasks stream, counted on the server by an interceptor."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from conveyor import (
    AsyncClient,
    Client,
    ConveyorError,
    TaskFailed,
    TaskNotFound,
    TaskSpec,
    TaskState,
    Unavailable,
    WaitTimeout,
)
from tests.support.procs import wait_until
from tests.support.server import ServerThread, free_port, test_config

LATER = 600.0  # a delay no test outlives: the task stays PENDING until cancelled


class CallCounter(aio.ServerInterceptor):  # type: ignore[misc]
    """Counts the calls the server receives, by method name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.calls[details.method.rsplit("/", 1)[-1]] += 1  # type: ignore[attr-defined]
        return await continuation(details)


Served = tuple[ServerThread, CallCounter]


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    """A server on each store, with a call counter."""
    counter = CallCounter()
    thread = ServerThread(test_config(store=store_url), interceptors=[counter]).start()
    yield thread, counter
    thread.stop()


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with Client(served[0].address, timeout=10) as client:
        yield client


def in_threads(count: int, call: Callable[[], Any]) -> list[futures.Future[Any]]:
    pool = futures.ThreadPoolExecutor(count)
    started = [pool.submit(call) for _ in range(count)]
    pool.shutdown(wait=False)
    return started


def until_waited(client: Client, ids: set[str], waiters: int = 1) -> None:
    """Block until the client's stream covers these ids (its reader took
    them), each with this many waiters."""
    book = client._results._book
    for _ in range(2000):
        with client._results._lock:
            covered = ids <= book._waiters.keys() and book._open
            if covered and all(len(book._waiters[i]) >= waiters for i in ids):
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"the client never waited on {ids}")


def test_threads_waiting_on_one_task_share_one_stream(served: Served, client: Client) -> None:
    _, counter = served
    handle = client.submit("echo", {}, delay=LATER)
    waits = in_threads(16, lambda: handle.wait(timeout=30))
    until_waited(client, {handle.id}, waiters=16)
    client.cancel(handle.id)
    assert {wait.result(timeout=30).state for wait in waits} == {TaskState.CANCELLED}
    assert counter.calls["WatchTasks"] == 1
    assert counter.calls["WatchTask"] == counter.calls["GetTask"] == 0


def test_many_threads_each_waiting_on_its_own_task(served: Served, client: Client) -> None:
    _, counter = served

    def submit_and_wait() -> Any:
        return client.submit("echo", {"n": 1}).result(timeout=30)

    waits = in_threads(12, submit_and_wait)
    assert [wait.result(timeout=30) for wait in waits] == [{"n": 1}] * 12
    # Streams are reopened as ids join, never one per task beside them.
    assert 1 <= counter.calls["WatchTasks"] <= 12
    assert counter.calls["WatchTask"] == counter.calls["GetTask"] == 0


def test_wait_all_keeps_the_order_given_on_the_stream_already_open(
    served: Served, client: Client
) -> None:
    _, counter = served
    done = client.submit("echo", {"i": 0})
    client.wait(done.id, timeout=30)
    opened_before = counter.calls["WatchTasks"]
    pending = client.submit("echo", {"i": 1}, delay=LATER)
    running = [client.submit("echo", {"i": i}) for i in range(2, 6)]
    order = [running[2], pending, done, running[0], running[3], running[1]]
    result = futures.ThreadPoolExecutor(1).submit(client.wait_all, order, timeout=30)
    until_waited(client, {pending.id})
    client.cancel(pending.id)
    tasks = result.result(timeout=30)
    assert [task.id for task in tasks] == [handle.id for handle in order]
    assert tasks[1].state is TaskState.CANCELLED
    assert all(task.state is TaskState.SUCCEEDED for i, task in enumerate(tasks) if i != 1)
    # The stream the first wait opened follows the client's tasks: none
    # needed listing, so it was not reopened.
    assert counter.calls["WatchTasks"] - opened_before == 0


def test_as_completed_yields_each_task_once_as_it_finishes(client: Client) -> None:
    done = client.submit("echo", {})
    client.wait(done.id, timeout=30)
    first, second, third = (client.submit("echo", {}, delay=LATER) for _ in range(3))
    finished = client.as_completed([first, second.id, done, third], timeout=30)
    assert next(finished).id == done.id
    for handle in (second, third, first):
        client.cancel(handle.id)
        task = next(finished)
        assert (task.id, task.state) == (handle.id, TaskState.CANCELLED)
    assert list(finished) == []


def test_wait_timeout_carries_the_last_snapshot_and_the_client_carries_on(
    client: Client,
) -> None:
    handle = client.submit("echo", {}, delay=LATER)
    with pytest.raises(WaitTimeout) as by_handle:
        handle.wait(timeout=0.2)
    assert by_handle.value.task == handle.task
    with pytest.raises(WaitTimeout) as by_id:
        client.wait(handle.id, timeout=0.2)
    assert by_id.value.task is not None
    assert (by_id.value.task.id, by_id.value.task.state) == (handle.id, TaskState.PENDING)
    with pytest.raises(WaitTimeout) as listed:
        list(client.as_completed([handle], timeout=0.2))
    assert listed.value.task_id == handle.id
    client.cancel(handle.id)
    assert handle.wait(timeout=30).state is TaskState.CANCELLED


def test_a_failed_task_raises_task_failed(client: Client) -> None:
    handle = client.submit("fail_permanently", {"message": "no"})
    with pytest.raises(TaskFailed) as caught:
        handle.result(timeout=30)
    assert caught.value.task.state is TaskState.FAILED
    assert caught.value.task.error is not None
    assert "no" in caught.value.task.error.message


def test_an_unknown_id_fails_only_its_own_waiters(client: Client) -> None:
    handle = client.submit("echo", {}, delay=LATER)
    waiting = futures.ThreadPoolExecutor(1).submit(handle.wait, 30)
    until_waited(client, {handle.id})
    with pytest.raises(TaskNotFound, match="no-such-task"):
        client.wait("no-such-task", timeout=30)
    with pytest.raises(TaskNotFound):
        client.wait_all([handle, "no-such-task"], timeout=30)
    client.cancel(handle.id)
    assert waiting.result(timeout=30).state is TaskState.CANCELLED


def test_more_than_1000_waited_ids_are_all_served(served: Served, client: Client) -> None:
    _, counter = served
    handles = []
    for start in (0, 700):
        specs = [TaskSpec("echo", {"i": i}) for i in range(start, start + 700)]
        handles.extend(client.submit_batch(specs))
    tasks = client.wait_all(handles, timeout=120)
    assert [task.result for task in tasks] == [{"i": i} for i in range(1400)]
    # The first stream covers 1,000 ids; the rest join as room frees.
    assert counter.calls["WatchTasks"] >= 2


def test_close_fails_the_pending_waiters(served: Served) -> None:
    client = Client(served[0].address, timeout=10)
    handle = client.submit("echo", {}, delay=LATER)
    waiting = futures.ThreadPoolExecutor(1).submit(handle.wait, 30)
    until_waited(client, {handle.id})
    client.close()
    with pytest.raises(ConveyorError, match="closed") as caught:
        waiting.result(timeout=30)
    assert caught.value.code is grpc.StatusCode.CANCELLED


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_wait_resumes_across_a_server_restart(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/tasks.db"
        if store == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    config = test_config(store=url, port=free_port())
    first = ServerThread(config).start()
    with Client(first.address, timeout=10) as client:
        handle = client.submit("echo", {}, delay=LATER)
        waiting = futures.ThreadPoolExecutor(1).submit(handle.wait, 60)
        until_waited(client, {handle.id})
        first.stop()
        second = ServerThread(config).start()
        try:
            # The client's channel reconnects after its own backoff.
            wait_until(lambda: answers(client, handle.id), 30, "the restarted server to answer")
            client.cancel(handle.id)
            assert waiting.result(timeout=60).state is TaskState.CANCELLED
        finally:
            second.stop()


def answers(client: Client, task_id: str) -> bool:
    try:
        client.get(task_id)
    except Unavailable:
        return False
    return True


# --- AsyncClient ----------------------------------------------------------------------


def test_coroutines_share_one_stream_and_get_their_own_outcome(
    served: Served,
) -> None:
    thread, counter = served

    async def main() -> None:
        async with AsyncClient(thread.address, timeout=10) as client:
            pending = await client.submit("echo", {}, delay=LATER)
            failing = await client.submit("fail_permanently", {})
            done = await client.submit("echo", {"k": 1})
            waits = [asyncio.ensure_future(pending.wait(timeout=30)) for _ in range(8)]
            assert await done.result(timeout=30) == {"k": 1}
            with pytest.raises(TaskFailed):
                await failing.result(timeout=30)
            with pytest.raises(TaskNotFound):
                await client.wait("no-such-task", timeout=30)
            with pytest.raises(WaitTimeout) as caught:
                await client.wait(pending.id, timeout=0.2)
            assert caught.value.task is not None
            await client.cancel(pending.id)
            assert {(await wait).state for wait in waits} == {TaskState.CANCELLED}
            order = [failing, done.id, pending]
            assert [t.id for t in await client.wait_all(order, timeout=30)] == [
                failing.id,
                done.id,
                pending.id,
            ]
            seen = [task.id async for task in client.as_completed(order, timeout=30)]
            assert sorted(seen) == sorted([failing.id, done.id, pending.id])

    asyncio.run(main())
    assert counter.calls["WatchTask"] == 0
    assert counter.calls["GetTask"] == 1  # the snapshot for the timed-out wait by id


def test_async_close_fails_the_pending_waiters(served: Served) -> None:
    async def main() -> None:
        client = AsyncClient(served[0].address, timeout=10)
        handle = await client.submit("echo", {}, delay=LATER)
        waiting = asyncio.ensure_future(handle.wait(timeout=30))
        await asyncio.sleep(0)
        await client.close()
        with pytest.raises(ConveyorError, match="closed"):
            await waiting

    asyncio.run(main())


def test_tasks_submitted_while_the_stream_follows_are_waited_on_with_no_new_stream(
    served: Served, client: Client
) -> None:
    _, counter = served
    # The first wait opens the stream, which then follows the client's tasks
    # by its reply_to.
    assert client.submit("echo", {"n": 0}).result(timeout=30) == {"n": 0}
    opened = counter.calls["WatchTasks"]

    def cycles() -> list[Any]:
        return [client.submit("echo", {"n": n}).result(timeout=30) for n in range(1, 26)]

    lanes = in_threads(8, cycles)
    assert [lane.result(timeout=60) for lane in lanes] == [[{"n": n} for n in range(1, 26)]] * 8
    # 200 submits and waits from 8 threads, the stream left as it was.
    assert counter.calls["WatchTasks"] == opened
    assert counter.calls["WatchTask"] == counter.calls["GetTask"] == 0


def test_a_task_that_ends_before_its_wait_is_answered_from_its_handle(
    served: Served, client: Client
) -> None:
    _, counter = served
    client.submit("echo", {}).wait(timeout=30)
    handles = [client.submit("echo", {"i": i}) for i in range(20)]
    # Their ends come on the open stream while nobody waits.
    for _ in range(2000):
        if all(handle._final is not None for handle in handles):
            break
        threading.Event().wait(0.005)
    opened = counter.calls["WatchTasks"]
    assert [h.result(timeout=30) for h in handles] == [{"i": i} for i in range(20)]
    assert counter.calls["WatchTasks"] == opened


def test_a_task_another_client_submitted_with_the_same_key_is_waited_on_by_id(
    served: Served, client: Client
) -> None:
    thread, _ = served
    with Client(thread.address, timeout=10) as other:
        first = other.submit("echo", {"k": 1}, idempotency_key="shared-key", delay=0.3)
    # This client's submit returns the other client's task, which its
    # stream does not follow by name: the wait lists it by id.
    again = client.submit("echo", {"k": 1}, idempotency_key="shared-key", delay=0.3)
    assert again.id == first.id
    assert again.result(timeout=30) == {"k": 1}


def test_coroutines_submitting_while_the_stream_follows_open_no_new_stream(
    served: Served,
) -> None:
    thread, counter = served

    async def main() -> None:
        async with AsyncClient(thread.address, timeout=10) as client:
            assert await (await client.submit("echo", {"n": 0})).result(timeout=30) == {"n": 0}
            opened = counter.calls["WatchTasks"]

            async def cycles() -> list[Any]:
                return [
                    await (await client.submit("echo", {"n": n})).result(timeout=30)
                    for n in range(1, 26)
                ]

            lanes = await asyncio.gather(*(cycles() for _ in range(8)))
            assert lanes == [[{"n": n} for n in range(1, 26)]] * 8
            assert counter.calls["WatchTasks"] == opened

    asyncio.run(main())
