"""Clients of the real in-process server (the `server` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent import futures
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import grpc
import pytest

from conveyor import AsyncClient, AsyncTaskHandle, Client
from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc


@pytest.fixture
def client(server: Any) -> Iterator[Client]:
    with Client(server.address, timeout=5.0) as client:
        yield client


@pytest.fixture
async def aclient(server: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.address, timeout=5.0) as client:
        yield client


# Opens a client of either kind, with the blocking API: connect(target, **kwargs).
Connect = Callable[..., AbstractContextManager[Client]]


class LoopThread:
    """An event loop running on a thread of its own, for AsyncClient under a blocking test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Blocking:
    """The blocking API of an AsyncClient or AsyncTaskHandle, so that one test
    body runs on both clients: coroutines are run on the loop thread, async
    iterators are read through it, and handles are wrapped in turn.
    `isinstance` sees the wrapped class."""

    def __init__(self, target: object, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))

    def _wrap(self, value: Any) -> Any:
        if inspect.iscoroutine(value):
            return self._wrap(self._loop.run(value))
        if isinstance(value, AsyncIterator):
            return self._iterate(value)
        if isinstance(value, AsyncTaskHandle):
            return Blocking(value, self._loop)
        if isinstance(value, list):
            return [self._wrap(item) for item in value]
        return value

    def _iterate(self, iterator: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    item = self._loop.run(_next(iterator))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self._loop.run(aclose())


async def _next(iterator: AsyncIterator[Any]) -> Any:
    return await anext(iterator)


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """Opens a Client, then (the second parameter) an AsyncClient behind `Blocking`."""
    if request.param == "sync":
        yield Client
        return
    loop = LoopThread()

    @contextmanager
    def open_async(target: str, **kwargs: Any) -> Iterator[Client]:
        async def create() -> AsyncClient:  # AsyncClient wants a running loop
            return AsyncClient(target, **kwargs)

        client: AsyncClient = loop.run(create())
        try:
            yield cast(Client, Blocking(client, loop))
        finally:
            loop.run(client.close())

    yield open_async
    loop.stop()


@pytest.fixture
def each_client(server: Any, connect: Connect) -> Iterator[Client]:
    """A client of the real server: the sync Client, then the AsyncClient."""
    with connect(server.address, timeout=5.0) as client:
        yield client


@pytest.fixture
def run_label() -> dict[str, str]:
    """A label unique to the test, so list filters see only the test's own tasks."""
    return {"run": uuid.uuid4().hex}


class ScriptedService(task_service_pb2_grpc.TaskServiceServicer):
    """A stand-in service that fails on purpose, to test retries, resumes and deadlines.

    - GetTask: UNAVAILABLE for the first `unavailable_gets` calls; id "slow" sleeps 1 s.
    - SubmitTask: always UNAVAILABLE.
    - WatchTask: versions 1 and 2 then UNAVAILABLE; resumed, the terminal version 3.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.unavailable_gets = 2
        self.watch_since: list[int] = []

    def GetTask(self, request: Any, context: Any) -> Any:
        self.calls["GetTask"] += 1
        if request.id == "slow":
            time.sleep(1)
        if self.calls["GetTask"] <= self.unavailable_gets:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        # Ids starting with "running" are unfinished when read.
        done = not request.id.startswith("running")
        return task_service_pb2.GetTaskResponse(task=_task(request.id, 1, done=done))

    def SubmitTask(self, request: Any, context: Any) -> Any:
        self.calls["SubmitTask"] += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    def WatchTask(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls["WatchTask"] += 1
        self.watch_since.append(request.since_version)
        if request.since_version == 0:
            yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 1, done=False))
            yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 2, done=False))
            context.abort(grpc.StatusCode.UNAVAILABLE, "moving")
        yield task_service_pb2.WatchTaskResponse(task=_task(request.id, 3, done=True))


def _task(task_id: str, version: int, *, done: bool) -> task_pb2.Task:
    state = task_pb2.TASK_STATE_SUCCEEDED if done else task_pb2.TASK_STATE_RUNNING
    return task_pb2.Task(id=task_id, type="echo", state=state, version=version)


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedService, str]]:
    """A ScriptedService on a plain gRPC server; yields it and its address."""
    service = ScriptedService()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield service, f"127.0.0.1:{port}"
    grpc_server.stop(None)
