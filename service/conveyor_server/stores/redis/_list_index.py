"""The build of a RedisStore's list indexes over tasks stored before they
existed (by a version without them).

The scripts keep the indexes of every task they create or change; tasks
already stored have no entries until a build adds them. Every store starts
the build once it is attached or first lists, in the background, unless
`P:list_index` says it is done; one process at a time builds (a lease,
renewed by each call), in calls of `scripts.INDEX_CHUNK` tasks, and marks
it done. Until then listing reads every task of the tenant, as without
indexes, so pages are right throughout and only their cost changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from conveyor_server.stores.redis._connection import DOWN

__all__ = ["ListIndexBuild"]

logger = logging.getLogger(__name__)

# How long the lease of the building process lasts past its last call: how
# soon another process takes over a build whose process died.
LEASE_MS = 30_000
# How often a process that is not building looks again, and how long one
# waits after Redis failed it.
WAIT_SECONDS = 2.0
# Keys a SCAN call asks for, when finding the tenants.
SCAN_COUNT = 1000


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class ListIndexBuild:
    """Builds the indexes in the background once `start` is called."""

    def __init__(self, redis: Redis, prefix: str, builder: str, script: AsyncScript) -> None:
        self._redis = redis
        self._prefix = prefix
        self._builder = builder
        self._script = script
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the build unless it was started; needs a running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="conveyor-list-index"
            )

    async def wait(self) -> None:
        """Until the indexes are built (starting the build if need be)."""
        self.start()
        assert self._task is not None
        await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                if await self._built():
                    return
            except DOWN as exc:
                logger.warning("building the list indexes: Redis failed (%s); trying again", exc)
            await asyncio.sleep(WAIT_SECONDS)

    async def _call(self, *args: bytes | str) -> list[bytes]:
        reply: list[bytes] = await self._script(
            keys=[], args=[self._prefix, self._builder, LEASE_MS, *args]
        )
        return reply

    async def _built(self) -> bool:
        """One pass over every tenant; False when another process builds."""
        first = await self._call("begin")
        if first[0] == b"done":
            return True
        if first[0] == b"busy":
            return False
        head = f"{self._prefix}:tasks:".encode()
        tenants: list[bytes] = [
            key[len(head) :]
            async for key in self._redis.scan_iter(
                match=_glob_escape(self._prefix) + ":tasks:*", count=SCAN_COUNT
            )
        ]
        for tenant in tenants:
            before = b"+inf"
            while True:
                reply = await self._call("chunk", tenant, before)
                if reply[0] != b"ok":
                    return reply[0] == b"done"
                if not reply[1]:
                    break
                before = b"(" + reply[1]
        logger.info("built the list indexes of %d tenants", len(tenants))
        return (await self._call("end"))[0] == b"done"
