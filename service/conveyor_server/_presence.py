"""WorkerPresence: a process that runs tasks says so in its store.

It registers itself (id, host, pid, task types, threads, running tasks,
start time) when its runner starts, refreshes the entry every heartbeat,
and drops it when it stops claiming. An entry of a process that died
without a word expires after a few missed heartbeats. API replicas read
the entries to accept the types that live workers serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable

from conveyor_server._handlers import HandlerRegistry
from conveyor_server.stores import StoreError, TaskStore, TaskTypeInfo, WorkerInfo

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# Three heartbeats missed: the process is gone (or cut off from the store).
TTL_SECONDS = 3 * HEARTBEAT_SECONDS


def type_infos(registry: HandlerRegistry) -> tuple[TaskTypeInfo, ...]:
    """What a worker tells of the types it serves."""
    return tuple(
        TaskTypeInfo(
            r.type,
            r.description,
            "" if r.example is None else json.dumps(r.example, separators=(",", ":")),
        )
        for r in sorted(registry, key=lambda r: r.type)
    )


class WorkerPresence:
    """The entry of this process in its store, kept fresh while it claims."""

    def __init__(
        self,
        store: TaskStore,
        registry: HandlerRegistry,
        *,
        threads: int,
        running: Callable[[], int],
        heartbeat: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._running = running
        self._heartbeat = heartbeat
        self._clock = clock
        host = socket.gethostname()
        self._info = WorkerInfo(
            id=f"{host}:{os.getpid()}:{os.urandom(3).hex()}",
            host=host,
            pid=os.getpid(),
            types=type_infos(registry),
            threads=threads,
            running=0,
            started=clock(),
            heartbeat=clock(),
            ttl=3 * heartbeat,
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self._info.id

    async def start(self) -> None:
        """Register now, so that API replicas accept this worker's types
        from its first moment; then refresh in the background."""
        try:
            await self._refresh()
        except StoreError:
            logger.warning("could not register this worker yet; retrying every heartbeat")
        self._task = asyncio.create_task(self._keep_up(), name="conveyor-worker-presence")

    async def stop(self) -> None:
        """This process no longer claims: drop its entry."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            await self._store.unregister_worker(self._info.id)
        except StoreError:
            logger.warning("could not unregister this worker; its entry will expire")

    async def _refresh(self) -> None:
        now = self._clock()
        self._info = dataclasses.replace(self._info, running=self._running(), heartbeat=now)
        await self._store.register_worker(self._info)

    async def _keep_up(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._refresh()
            except StoreError:
                logger.warning("could not refresh this worker's entry in the store")
            except Exception:
                logger.exception("worker heartbeat failed")
