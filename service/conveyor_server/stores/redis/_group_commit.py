"""Round trips shared among concurrent calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from conveyor_server.stores._errors import StoreUnavailable

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class GroupCommit(Generic[_Item, _Result]):
    """Shares round trips among concurrent calls: a call made while none is
    in flight goes at once; calls made meanwhile wait and go together in the
    next one. No added latency when idle, one round trip per wave when busy.

    `send` takes the items of one wave and returns, per item, its result or
    the exception to raise for it.
    """

    def __init__(self, send: Callable[[list[_Item]], Awaitable[list[_Result | Exception]]]) -> None:
        self._send = send
        self._waiting: list[tuple[_Item, asyncio.Future[_Result]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, item: _Item) -> _Result:
        if self._busy:
            future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            return await future
        self._busy = True
        try:
            [result] = await self._send([item])
        finally:
            self._next_wave()
        if isinstance(result, Exception):
            raise result
        return result

    def _next_wave(self) -> None:
        if self._waiting:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False
            self._drainer = None

    async def _drain(self) -> None:
        wave, self._waiting = self._waiting, []
        try:
            results = await self._send([item for item, _ in wave])
        except Exception as exc:
            for _, future in wave:
                if not future.done():
                    # One exception object per caller: raising a shared one
                    # from several tasks would tangle its traceback.
                    copy = StoreUnavailable(*exc.args) if isinstance(exc, StoreUnavailable) else exc
                    future.set_exception(copy)
        else:
            for (_, future), result in zip(wave, results, strict=True):
                if future.done():
                    continue  # its caller gave up
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._next_wave()
