"""The shared result stream of `AsyncClient`: one reader task per client,
while anyone waits, drives the `ResultBook` of `_results`; waiters await
futures of their own. A waiter whose task the open stream does not cover
cancels the call, and the reader opens the next one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from conveyor import _core
from conveyor._errors import ConveyorError, Unavailable, WaitTimeout, from_rpc_error
from conveyor._results import ResultBook, StreamUnsupported
from conveyor._types import Task
from conveyor.v1 import task_service_pb2

_Call = grpc.aio.UnaryStreamCall[Any, Any]
OpenStream = Callable[[task_service_pb2.WatchTasksRequest], _Call]
# The per-task wait, for a service without WatchTasks: (id, timeout) -> Task.
Fallback = Callable[[str, float | None], Awaitable[Task]]
# The task's current snapshot, or None when it cannot be read.
Snapshot = Callable[[str], Awaitable[Task | None]]
_Outcome = tuple[str, Task | None, ConveyorError | None]


class _Waiter:
    """One waiting coroutine (or one task of `wait_all`): a future."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()

    def resolve(self, task: Task) -> None:
        if not self.future.done():
            self.future.set_result(task)

    def fail(self, error: ConveyorError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Queued:
    """One task of `as_completed`: its end goes to the caller's queue."""

    __slots__ = ("_queue", "task_id")

    def __init__(self, outcomes: asyncio.Queue[_Outcome], task_id: str) -> None:
        self._queue = outcomes
        self.task_id = task_id

    def resolve(self, task: Task) -> None:
        self._queue.put_nowait((self.task_id, task, None))

    def fail(self, error: ConveyorError) -> None:
        self._queue.put_nowait((self.task_id, None, error))


class ResultStreamTask:
    """Waits of one `AsyncClient`, all served by one WatchTasks stream."""

    def __init__(self, open_stream: OpenStream, fallback: Fallback, snapshot: Snapshot) -> None:
        self._open_stream = open_stream
        self._fallback = fallback
        self._snapshot = snapshot
        self._book: ResultBook[_Waiter | _Queued] = ResultBook()
        self._call: _Call | None = None
        self._reader: asyncio.Task[None] | None = None

    async def wait(self, task_id: str, timeout: float | None, known: Task | None = None) -> Task:  # noqa: ASYNC109
        [task] = await self.wait_all([(task_id, known)], timeout)
        return task

    async def wait_all(
        self, items: Iterable[tuple[str, Task | None]], seconds: float | None
    ) -> list[Task]:
        loop = asyncio.get_running_loop()
        deadline = _core.deadline_after(seconds, loop.time())
        waiters = [(task_id, known, _Waiter()) for task_id, known in items]
        self._add((task_id, waiter) for task_id, _, waiter in waiters)
        try:
            tasks: list[Task] = []
            for task_id, known, waiter in waiters:
                left = _core.remaining(deadline, loop.time())
                done, _ = await asyncio.wait((waiter.future,), timeout=left)
                if not done:
                    raise await self._timed_out(task_id, seconds, known)
                tasks.append(await self._outcome(task_id, waiter.future, deadline))
            return tasks
        finally:
            self._discard((task_id, waiter) for task_id, _, waiter in waiters)
            for _, _, waiter in waiters:
                # Errors nobody will read are not "never retrieved".
                if waiter.future.done() and not waiter.future.cancelled():
                    waiter.future.exception()
                waiter.future.cancel()

    async def as_completed(
        self, items: Iterable[tuple[str, Task | None]], seconds: float | None
    ) -> AsyncIterator[Task]:
        loop = asyncio.get_running_loop()
        deadline = _core.deadline_after(seconds, loop.time())
        outcomes: asyncio.Queue[_Outcome] = asyncio.Queue()
        listed = list(items)
        waiters = [(task_id, _Queued(outcomes, task_id)) for task_id, _ in listed]
        left = dict(listed)
        self._add(waiters)
        try:
            for _ in waiters:
                try:
                    async with asyncio.timeout(_core.remaining(deadline, loop.time())):
                        task_id, task, error = await outcomes.get()
                except TimeoutError:
                    first = next(iter(left))
                    raise await self._timed_out(first, seconds, left[first]) from None
                future: asyncio.Future[Task] = loop.create_future()
                if error is None:
                    assert task is not None
                    future.set_result(task)
                else:
                    future.set_exception(error)
                yield await self._outcome(task_id, future, deadline)
                left.pop(task_id, None)
        finally:
            self._discard(waiters)

    async def close(self) -> None:
        """Fail every waiter and end the stream."""
        self._book.close()
        if self._call is not None:
            self._call.cancel()
        reader = self._reader
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # --- the waiters' side ------------------------------------------------------------

    def _add(self, waiters: Iterable[tuple[str, _Waiter | _Queued]]) -> None:
        if self._book.unsupported:
            for _, waiter in waiters:
                waiter.fail(StreamUnsupported("", code=grpc.StatusCode.UNIMPLEMENTED))
            return
        reopen = False
        for task_id, waiter in waiters:
            reopen = self._book.add(task_id, waiter) or reopen
        if reopen and self._call is not None:
            self._call.cancel()
        if self._reader is None and self._book.waiting:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    def _discard(self, waiters: Iterable[tuple[str, _Waiter | _Queued]]) -> None:
        for task_id, waiter in waiters:
            self._book.discard(task_id, waiter)

    async def _outcome(
        self, task_id: str, future: asyncio.Future[Task], deadline: float | None
    ) -> Task:
        try:
            return future.result()
        except StreamUnsupported:
            left = _core.remaining(deadline, asyncio.get_running_loop().time())
            return await self._fallback(task_id, left)

    async def _timed_out(
        self, task_id: str, seconds: float | None, known: Task | None
    ) -> WaitTimeout:
        assert seconds is not None
        return WaitTimeout(task_id, seconds, known or await self._snapshot(task_id))

    # --- the reader task --------------------------------------------------------------

    async def _read(self) -> None:
        book = self._book
        try:
            while (request := book.next_request()) is not None:
                call = self._call = self._open_stream(request)
                try:
                    while (message := await call.read()) is not grpc.aio.EOF:
                        assert isinstance(message, task_service_pb2.WatchTasksResponse)
                        if book.received(message):
                            break
                    else:
                        # A stream without a deadline ends only on failure.
                        raise _ended_early()
                    call.cancel()
                    continue
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    # A waiter cancelled the call to reopen it.
                    error: ConveyorError = ConveyorError("reopened", code=grpc.StatusCode.CANCELLED)
                except grpc.RpcError as exc:
                    error = from_rpc_error(exc)
                except ConveyorError as exc:
                    error = exc
                delay = book.failed(error)
                if delay:
                    await asyncio.sleep(delay)
        finally:
            self._reader = self._call = None


def _ended_early() -> Unavailable:
    return Unavailable("the result stream ended", code=grpc.StatusCode.UNAVAILABLE)
