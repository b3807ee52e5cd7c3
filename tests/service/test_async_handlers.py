"""`async def` handlers: the same context, outcomes and retries as sync ones,
on an event loop of their own with a capacity apart from the threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from conveyor import Client, InvalidArgument, Task, TaskState
from conveyor_server import HandlerRegistry, InvalidPayload, NonRetryableError, TaskContext
from tests.support.procs import wait_until
from tests.support.server import ServerThread, test_config

registry = HandlerRegistry()


class Gate:
    """Opened by a test to let parked handlers go on, sync or async."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def open(self) -> None:
        with self._lock:
            self._opened.set()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that server is gone
                loop.call_soon_threadsafe(event.set)

    def wait(self, timeout: float) -> bool:
        return self._opened.wait(timeout)

    async def passed(self) -> None:
        with self._lock:
            if self._opened.is_set():
                return
            event = asyncio.Event()
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


class Gates:
    """The gates of a test, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, Gate] = {}
        # What a parked handler saw when its coroutine was cancelled.
        self.cancelled: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> Gate:
        with self._lock:
            return self._gates.setdefault(name, Gate())

    def open_all(self) -> None:
        with self._lock:
            opened, self._gates = list(self._gates.values()), {}
            self.cancelled.clear()
        for gate in opened:
            gate.open()


gates = Gates()


@pytest.fixture(autouse=True)
def _fresh_gates() -> Iterator[None]:
    yield
    # Parked handlers of a failed test must not outlive it.
    gates.open_all()


def _check_size(payload: Mapping[str, Any]) -> None:
    if not isinstance(payload.get("size"), int):
        raise InvalidPayload("size must be an integer", field="size")


@registry.task("a_double", validate=_check_size)
async def a_double(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    ctx.report_progress(50, "halfway", current=1, total=2)
    await asyncio.sleep(0)
    return {"double": 2 * payload["size"], "attempt": ctx.attempt}


@registry.task("a_park")
async def a_park(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Reports progress, then waits for its gate, ignoring stop requests:
    only cancelling its coroutine ends it early."""
    ctx.report_progress(10, "parked")
    try:
        await gates[payload.get("gate", "default")].passed()
    except asyncio.CancelledError:
        gates.cancelled[payload.get("gate", "default")] = ctx.stop_reason
        raise
    return "released"


@registry.task("a_cooperative")
async def a_cooperative(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Stops when asked, through `cancelled` or `raise_if_cancelled`."""
    ctx.report_progress(1, "started")
    while True:
        if payload.get("raise"):
            ctx.raise_if_cancelled()
        elif ctx.cancelled:
            return "stopped"
        await asyncio.sleep(0.01)


@registry.task("a_flaky")
async def a_flaky(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    await asyncio.sleep(0)
    if ctx.attempt < int(payload["succeed_on"]):
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


@registry.task("a_refuse")
async def a_refuse(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    if payload.get("invalid"):
        raise InvalidPayload("no such customer", field="customer")
    raise NonRetryableError("card declined")


@registry.task("a_not_json")
async def a_not_json(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return {1, 2}


@registry.task("s_block")
def s_block(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """A sync handler that holds its thread until its gate opens."""
    gates[payload["gate"]].wait(30)
    return "unblocked"


@registry.task("s_echo")
def s_echo(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return payload


@pytest.fixture
def connect(store_url: str) -> Iterator[Callable[..., Client]]:
    """connect(**settings): a client of a fresh server on each store."""
    servers: list[ServerThread] = []
    clients: list[Client] = []

    def make(**overrides: Any) -> Client:
        server = ServerThread(test_config(store=store_url, **overrides), registry).start()
        servers.append(server)
        client = Client(server.address, timeout=10.0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def running(client: Client, type: str) -> int:
    """How many tasks of `type` the server says are running now."""
    return sum(1 for _ in client.list(states=[TaskState.RUNNING], type=type, page_size=1000))


def wait_progress(client: Client, task_id: str, message: str) -> Task:
    seen: list[Task] = []

    def reported() -> bool:
        seen[:] = [client.get(task_id)]
        return seen[0].progress.message == message

    wait_until(reported, 10, f"progress {message!r} of {task_id}")
    return seen[0]


def test_result_and_progress(connect: Callable[..., Client]) -> None:
    client = connect()
    done = client.submit("a_double", {"size": 21}).wait(timeout=10)
    assert done.state is TaskState.SUCCEEDED
    assert done.result == {"double": 42, "attempt": 1}
    # A success ends at 100%, keeping the last message, as for sync handlers.
    assert (done.progress.percent, done.progress.message) == (100, "halfway")
    assert (done.progress.current, done.progress.total) == (1, 2)


def test_progress_is_seen_while_running(connect: Callable[..., Client]) -> None:
    client = connect()
    handle = client.submit("a_park", {"gate": "progress"})
    seen = wait_progress(client, handle.id, "parked")
    assert seen.state is TaskState.RUNNING
    gates["progress"].open()
    assert handle.wait(timeout=10).result == "released"


def test_retries_until_success(connect: Callable[..., Client]) -> None:
    client = connect()
    done = client.submit("a_flaky", {"succeed_on": 3}, max_attempts=5).wait(timeout=10)
    assert (done.state, done.attempt, done.result) == (TaskState.SUCCEEDED, 3, {"attempt": 3})


def test_failures_keep_their_codes(connect: Callable[..., Client]) -> None:
    client = connect()
    failed = client.submit("a_flaky", {"succeed_on": 9}, max_attempts=2).wait(timeout=10)
    assert (failed.state, failed.attempt) == (TaskState.FAILED, 2)
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("HANDLER_ERROR", "attempt 2 failed")
    assert failed.error.exception_type == "ConnectionError"
    refused = client.submit("a_refuse", {}, max_attempts=3).wait(timeout=10)
    assert refused.error is not None
    assert (refused.attempt, refused.error.code) == (1, "NON_RETRYABLE")
    invalid = client.submit("a_refuse", {"invalid": True}, max_attempts=3).wait(timeout=10)
    assert invalid.error is not None
    assert (invalid.attempt, invalid.error.code) == (1, "INVALID_PAYLOAD")
    not_json = client.submit("a_not_json", {}).wait(timeout=10)
    assert not_json.error is not None
    assert not_json.error.code == "INVALID_RESULT"


def test_payload_is_checked_at_submit(connect: Callable[..., Client]) -> None:
    client = connect()
    with pytest.raises(InvalidArgument, match="size must be an integer"):
        client.submit("a_double", {"size": "big"})


def test_cancel_cancels_the_coroutine_after_the_stop_grace(
    connect: Callable[..., Client],
) -> None:
    # One place on the loop: the next task runs only once the cancelled
    # coroutine has let go of it.
    client = connect(async_tasks=1, stop_grace_seconds=0.2)
    handle = client.submit("a_park", {"gate": "cancel"})
    wait_progress(client, handle.id, "parked")
    queued = client.submit("a_double", {"size": 1})
    client.cancel(handle.id)
    assert handle.wait(timeout=10).state is TaskState.CANCELLED
    assert queued.wait(timeout=10).state is TaskState.SUCCEEDED
    assert gates.cancelled == {"cancel": "cancelled"}


@pytest.mark.parametrize("raising", [False, True])
def test_cancel_is_seen_through_the_context(connect: Callable[..., Client], raising: bool) -> None:
    # A stop grace longer than the test's timeout: the task can end only
    # because the handler saw the request.
    client = connect(stop_grace_seconds=300)
    handle = client.submit("a_cooperative", {"raise": raising})
    wait_progress(client, handle.id, "started")
    client.cancel(handle.id)
    assert handle.wait(timeout=10).state is TaskState.CANCELLED


def test_timeout_cancels_the_coroutine_at_once(connect: Callable[..., Client]) -> None:
    # With a stop grace longer than the test's timeout, only cancelling the
    # coroutine at its timeout ends the attempts.
    client = connect(stop_grace_seconds=300)
    handle = client.submit("a_park", {"gate": "timeout"}, timeout=0.2, max_attempts=2)
    done = handle.wait(timeout=10)
    assert done.error is not None
    assert (done.state, done.attempt, done.error.code) == (TaskState.FAILED, 2, "TIMEOUT")
    assert gates.cancelled == {"timeout": "timeout"}


def test_sync_and_async_types_do_not_hold_each_other_back(
    connect: Callable[..., Client],
) -> None:
    client = connect(workers=1, async_tasks=2)
    # The loop's places full: sync tasks still run on the thread.
    parked = [client.submit("a_park", {"gate": "async"}) for _ in range(2)]
    wait_until(lambda: running(client, "a_park") == 2, 10, "both async tasks to run")
    assert client.submit("s_echo", {"n": 1}).wait(timeout=10).result == {"n": 1}
    # The one thread held: async tasks still run on the loop.
    blocker = client.submit("s_block", {"gate": "sync"})
    wait_until(lambda: running(client, "s_block") == 1, 10, "the sync task to run")
    gates["async"].open()
    assert [h.wait(timeout=10).result for h in parked] == ["released", "released"]
    assert client.submit("a_double", {"size": 2}).wait(timeout=10).result == {
        "double": 4,
        "attempt": 1,
    }
    assert client.get(blocker.id).state is TaskState.RUNNING
    gates["sync"].open()
    assert blocker.wait(timeout=10).result == "unblocked"


def test_many_async_tasks_run_at_once_on_two_threads(connect: Callable[..., Client]) -> None:
    client = connect(workers=2, async_tasks=300)
    handles = [client.submit("a_park", {"gate": "many"}) for _ in range(200)]
    wait_until(lambda: running(client, "a_park") == 200, 30, "200 async tasks running at once")
    gates["many"].open()
    done = client.wait_all(handles, timeout=30)
    assert {task.state for task in done} == {TaskState.SUCCEEDED}


@pytest.mark.stores("sqlite", "redis")
def test_shutdown_cancels_the_coroutine_and_hands_the_task_back(store_url: str) -> None:
    server = ServerThread(test_config(store=store_url), registry).start()
    with Client(server.address, timeout=10.0) as client:
        handle = client.submit("a_park", {"gate": "shutdown"})
        wait_progress(client, handle.id, "parked")
    server.stop(grace=0.1)
    assert gates.cancelled == {"shutdown": "shutdown"}
    # A server that runs nothing reads the task as the first one left it.
    reader = ServerThread(test_config(store=store_url, workers=0), registry).start()
    try:
        with Client(reader.address, timeout=10.0) as client:
            back = client.get(handle.id)
    finally:
        reader.stop()
    assert (back.state, back.attempt) == (TaskState.PENDING, 0)
