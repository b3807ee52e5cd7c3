"""The event loop that `async def` handlers run on.

Each runner has one, on a thread of its own: never the gRPC loop, which must
stay free for RPCs, and never a handler thread, so that a thousand handlers
waiting on I/O cost a thousand coroutines, not a thousand threads.

Threads own their halves: the runner's dispatcher calls `start`, `cancel`
and `returned` and alone reads `free`; the coroutines and their tasks live
on the handler loop. How an attempt ended goes back to the dispatcher as a
sync handler's does, through `post`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from conveyor_server._attempts import (
    HandlerReturned,
    RunningAttempt,
    checked_arguments,
    encode_result,
    failure_of,
)
from conveyor_server._handlers import Registration
from conveyor_server._tracing import attempt_trace
from conveyor_server.stores import ErrorCode, TaskFailure

logger = logging.getLogger("conveyor_server._runner")

# How long closing waits for cancelled coroutines to return.
CLOSE_SECONDS = 5.0


class HandlerLoop:
    """Runs up to `capacity` coroutine handlers at once on its own loop.

    >>> loop = HandlerLoop(capacity=500, post=runner_post, max_result_bytes=2**20)
    >>> loop.start(running, registration, payload)   # from the dispatcher
    """

    def __init__(
        self,
        *,
        capacity: int,
        post: Callable[[HandlerReturned], None],
        max_result_bytes: int,
    ) -> None:
        self.capacity = capacity
        self._post = post
        self._max_result_bytes = max_result_bytes
        # The dispatcher's: attempts whose coroutine has not returned.
        self._in_flight: set[RunningAttempt] = set()
        # The handler loop's: the asyncio task of each attempt.
        self._tasks: dict[RunningAttempt, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def free(self) -> int:
        """How many more attempts may start now."""
        return self.capacity - len(self._in_flight)

    def start(self, running: RunningAttempt, registration: Registration, payload: bytes) -> None:
        """Start an attempt's coroutine; the loop's thread starts with the first."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.new_event_loop()
            threading.Thread(
                target=_run_until_stopped, args=(loop,), name="conveyor-async-handlers", daemon=True
            ).start()
        self._in_flight.add(running)
        loop.call_soon_threadsafe(self._begin, running, registration, payload)

    def returned(self, running: RunningAttempt) -> bool:
        """The dispatcher heard that an attempt ended: True if it ran here,
        and its place is free again."""
        if running in self._in_flight:
            self._in_flight.discard(running)
            return True
        return False

    def cancel(self, running: RunningAttempt) -> None:
        """Cancel an attempt's coroutine (a timeout, a stop grace that ran
        out, a lost lease, a shutdown); it still ends through `post`."""
        if running in self._in_flight and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._cancel, running)

    async def close(self) -> None:
        """Cancel every coroutine, give them a moment to return, and stop the
        loop. Handlers that refuse to stop are left behind: the thread is a
        daemon, so the process can still exit."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(TimeoutError, RuntimeError):
            cancelling = asyncio.run_coroutine_threadsafe(self._cancel_all(), loop)
            await asyncio.wait_for(asyncio.wrap_future(cancelling), CLOSE_SECONDS)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)

    # -- on the handler loop -------------------------------------------

    def _begin(self, running: RunningAttempt, registration: Registration, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(running, registration, payload), name=f"conveyor-task-{running.task_id}"
        )
        self._tasks[running] = task
        task.add_done_callback(lambda done: self._ended(running, done))

    def _ended(self, running: RunningAttempt, task: asyncio.Task[None]) -> None:
        del self._tasks[running]
        if task.cancelled():
            # Cancelled before its first step, the coroutine never ran, so
            # `_run` could not say so itself.
            self._post(HandlerReturned(running, None, _interrupted(running)))

    def _cancel(self, running: RunningAttempt) -> None:
        task = self._tasks.get(running)
        if task is not None:
            task.cancel()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_SECONDS)

    async def _run(
        self, running: RunningAttempt, registration: Registration, payload: bytes
    ) -> None:
        """An async twin of `run_handler`: the same checks, the same failure
        codes, and a cancelled coroutine counts as interrupted (the runner
        turns that into CANCELLED or TIMEOUT by the stop reason)."""
        result: bytes | None = None
        failure: TaskFailure | None = None
        trace = attempt_trace(running)
        post = trace.ending(self._post)
        try:
            arguments = checked_arguments(registration, payload)
            with trace.active():
                value = await registration.handler(running.ctx, arguments)
            result, failure = encode_result(value, self._max_result_bytes)
        except asyncio.CancelledError:
            failure = _interrupted(running)
        except Exception as exc:
            failure = failure_of(exc, running.ctx)
        finally:
            post(HandlerReturned(running, result, failure))


def _interrupted(running: RunningAttempt) -> TaskFailure:
    reason = running.ctx.stop_reason or "cancelled"
    return TaskFailure(
        ErrorCode.INTERRUPTED, f"the handler was cancelled ({reason})", "CancelledError"
    )


def _run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
