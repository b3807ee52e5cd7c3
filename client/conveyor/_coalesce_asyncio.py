"""Coalesced submits for `AsyncClient`: the waiting, on the event loop.

The coroutine whose submit finds nothing in flight sends it at once. When a
send ends, the next wave goes out from a task of its own, so a caller that
is cancelled never takes the others' submits down with it. A submit whose
caller is cancelled (or whose deadline passes) while it is still queued is
taken out of the queue: its task is never created.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from conveyor._coalesce import QueuedSubmit, SubmitQueue, send
from conveyor._errors import DeadlineExceeded
from conveyor._flows import Flow
from conveyor._types import Task, TaskSpec

__all__ = ["AsyncSubmitter"]


class _Waiting(QueuedSubmit):
    __slots__ = ("answered", "context")

    def __init__(
        self, spec: TaskSpec, rpc_timeout: float | None, default_timeout: float, reply_to: str
    ) -> None:
        super().__init__(spec, rpc_timeout, default_timeout, time.monotonic(), reply_to)
        self.answered: asyncio.Future[None] | None = None
        # A wave goes out in the context of its first caller (its trace).
        self.context = contextvars.copy_context()


class AsyncSubmitter:
    """Coalesces the submits of one `AsyncClient`, on its event loop."""

    def __init__(
        self,
        run: Callable[[Flow[Any]], Awaitable[Any]],
        default_timeout: float,
        reply_to: str = "",
    ) -> None:
        self._reply_to = reply_to
        self._run = run
        self._timeout = default_timeout
        self._queue: SubmitQueue[_Waiting] = SubmitQueue()
        # Strong references: the loop keeps only weak ones to its tasks.
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, spec: TaskSpec, rpc_timeout: float | None) -> Task:
        submit = _Waiting(spec, rpc_timeout, self._timeout, self._reply_to)
        if self._queue.arrive(submit):
            try:
                await self._run(send([submit]))
            finally:
                self._hand_on()
            return submit.result()
        answered = submit.answered = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(answered, max(0.0, submit.deadline - time.monotonic()))
        except TimeoutError:
            if self._queue.withdraw(submit):
                raise _expired(
                    "still queued behind other submits of this client; the task was not created"
                ) from None
            raise _expired(
                "sent with other submits of this client and not yet answered; "
                "the task may have been created"
            ) from None
        except asyncio.CancelledError:
            # Still queued: it never leaves. Already sent: the task is
            # created, and its outcome is dropped.
            self._queue.withdraw(submit)
            raise
        return submit.result()

    def _hand_on(self) -> None:
        wave = self._queue.next_wave()
        if wave:
            task = asyncio.get_running_loop().create_task(self._send(wave), context=wave[0].context)
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, wave: list[_Waiting]) -> None:
        try:
            await self._run(send(wave))
        except BaseException as exc:
            for submit in wave:
                submit.fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            for submit in wave:
                if submit.answered is not None and not submit.answered.done():
                    submit.answered.set_result(None)
            self._hand_on()


def _expired(why: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"deadline exceeded: the submit was {why}", code=grpc.StatusCode.DEADLINE_EXCEEDED
    )
