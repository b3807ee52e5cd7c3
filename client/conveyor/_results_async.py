"""The shared result stream of `AsyncClient`: one reader task per client,
while anyone waits and a few seconds after, drives the `ResultBook` of
`_results`; waiters await queues of their own. A waiter whose task the open
stream does not cover cancels the call, and the reader opens the next one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc
import grpc.aio

from conveyor import _core
from conveyor._errors import ConveyorError, Unavailable, WaitTimeout, from_rpc_error
from conveyor._results import IDLE_SECONDS, Followed, ResultBook, StreamUnsupported, cursor_header
from conveyor._types import Task
from conveyor.v1 import task_service_pb2

_Call = grpc.aio.UnaryStreamCall[Any, Any]
OpenStream = Callable[[task_service_pb2.WatchTasksRequest], _Call]
# The per-task wait, for a service without WatchTasks: (id, timeout) -> Task.
Fallback = Callable[[str, float | None], Awaitable[Task]]
# The task's current snapshot, or None when it cannot be read.
Snapshot = Callable[[str], Awaitable[Task | None]]
# (position in the caller's list, terminal snapshot or None, error or None)
_Outcome = tuple[int, Task | None, ConveyorError | None]


class _Waiter:
    """One task a caller waits on: its end goes to the caller's queue."""

    __slots__ = ("_queue", "position")

    def __init__(self, outcomes: asyncio.Queue[_Outcome], position: int) -> None:
        self._queue = outcomes
        self.position = position

    def resolve(self, task: Task) -> None:
        self._queue.put_nowait((self.position, task, None))

    def fail(self, error: ConveyorError) -> None:
        self._queue.put_nowait((self.position, None, error))


class ResultStreamTask:
    """Waits of one `AsyncClient`, all served by one WatchTasks stream."""

    def __init__(
        self, open_stream: OpenStream, fallback: Fallback, snapshot: Snapshot, reply_to: str
    ) -> None:
        self._open_stream = open_stream
        self._fallback = fallback
        self._snapshot = snapshot
        self._book: ResultBook[_Waiter] = ResultBook(reply_to)
        self._call: _Call | None = None
        self._reader: asyncio.Task[None] | None = None
        # Closes the stream once nobody waited for IDLE_SECONDS.
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def reply_to(self) -> str:
        return self._book.reply_to

    @contextlib.contextmanager
    def submitting(self) -> Iterator[list[Followed]]:
        """Around a submit: the handles it hands out go in the list this
        yields, for the stream to follow them from the submit's start."""
        self._book.submitting()
        started = time.monotonic()
        handles: list[Followed] = []
        try:
            yield handles
        finally:
            self._book.submitted(handles, started)

    def retried(self, task: Task) -> None:
        """The client retried the task: its ends from before are stale."""
        self._book.retried(task.id, task.version)

    async def wait(self, task_id: str, timeout: float | None, known: Task | None = None) -> Task:  # noqa: ASYNC109
        [task] = await self.wait_all([(task_id, known)], timeout)
        return task

    async def wait_all(
        self, items: Iterable[tuple[str, Task | None]], seconds: float | None
    ) -> list[Task]:
        found: dict[int, Task] = {}
        listed = list(items)
        async with contextlib.aclosing(self._outcomes(listed, seconds)) as outcomes:
            async for position, task in outcomes:
                found[position] = task
        return [found[position] for position in range(len(listed))]

    async def as_completed(
        self, items: Iterable[tuple[str, Task | None]], seconds: float | None
    ) -> AsyncIterator[Task]:
        async with contextlib.aclosing(self._outcomes(list(items), seconds)) as outcomes:
            async for _, task in outcomes:
                yield task

    async def _outcomes(
        self, listed: list[tuple[str, Task | None]], seconds: float | None
    ) -> AsyncGenerator[tuple[int, Task], None]:
        """(position, terminal snapshot) of each task as it finishes; the
        first error or timeout is raised at once."""
        loop = asyncio.get_running_loop()
        deadline = _core.deadline_after(seconds, loop.time())
        outcomes: asyncio.Queue[_Outcome] = asyncio.Queue()
        waiters = []
        left = set()
        for i, (task_id, known) in enumerate(listed):
            if known is not None and known.is_terminal:
                # Its end came with the handle, or on the stream since.
                outcomes.put_nowait((i, known, None))
            else:
                waiters.append((task_id, _Waiter(outcomes, i)))
            left.add(i)
        if waiters:
            self._add(waiters)
        try:
            while left:
                try:
                    async with asyncio.timeout(_core.remaining(deadline, loop.time())):
                        position, task, error = await outcomes.get()
                except TimeoutError:
                    task_id, known = listed[min(left)]
                    raise await self._timed_out(task_id, seconds, known) from None
                left.discard(position)
                yield position, await self._outcome(listed[position][0], task, error, deadline)
        finally:
            if waiters:
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

    def _add(self, waiters: Iterable[tuple[str, _Waiter]]) -> None:
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

    def _discard(self, waiters: Iterable[tuple[str, _Waiter]]) -> None:
        for task_id, waiter in waiters:
            self._book.discard(task_id, waiter)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        """Nobody waits any more: close the stream IDLE_SECONDS from now,
        unless a wait comes first."""
        if self._book.became_idle(time.monotonic()) and self._idle_timer is None:
            self._arm_idle_timer(IDLE_SECONDS)

    def _arm_idle_timer(self, seconds: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(seconds, self._idle)

    def _idle(self) -> None:
        self._idle_timer = None
        left = self._book.idle_left(time.monotonic())
        if left is None or self._call is None:
            return
        if left > 0:
            self._arm_idle_timer(left)
            return
        self._book.close_idle()
        self._call.cancel()

    async def _outcome(
        self,
        task_id: str,
        task: Task | None,
        error: ConveyorError | None,
        deadline: float | None,
    ) -> Task:
        if isinstance(error, StreamUnsupported):
            left = _core.remaining(deadline, asyncio.get_running_loop().time())
            return await self._fallback(task_id, left)
        if error is not None:
            raise error
        assert task is not None
        return task

    async def _timed_out(
        self, task_id: str, seconds: float | None, known: Task | None
    ) -> WaitTimeout:
        assert seconds is not None
        return WaitTimeout(task_id, seconds, known or await self._snapshot(task_id))

    # --- the reader task --------------------------------------------------------------

    async def _read(self) -> None:
        book = self._book
        try:
            while (request := book.next_request(book.keeping(time.monotonic()))) is not None:
                call = self._call = self._open_stream(request)
                if not book.waiting and self._idle_timer is None:
                    self._arm_idle_timer(IDLE_SECONDS)
                try:
                    cursor = cursor_header(await call.initial_metadata())
                    if book.following(cursor, time.monotonic()):
                        call.cancel()
                    while (message := await call.read()) is not grpc.aio.EOF:
                        assert isinstance(message, task_service_pb2.WatchTasksResponse)
                        reopen = book.received(message)
                        self._maybe_idle()
                        if reopen:
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
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None


def _ended_early() -> Unavailable:
    return Unavailable("the result stream ended", code=grpc.StatusCode.UNAVAILABLE)
