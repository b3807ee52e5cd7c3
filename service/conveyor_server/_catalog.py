"""TaskTypeCatalog: which task types this service accepts, and who serves them.

A type is served when this server has its handler code (the local
registry) or a live worker registered in the store serves it. API replicas
of a shared store so accept the types of worker processes without their
code; the payload of such a type is checked by the worker when it claims
the task.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._convert import set_timestamp
from conveyor_server._handlers import HandlerRegistry
from conveyor_server._presence import type_infos
from conveyor_server.stores import (
    State,
    TaskRecord,
    TaskStore,
    TypeCounts,
    TypeLimits,
    TypeSettings,
    WorkerInfo,
)

# How long a read of the live workers stands in for the store's list.
FRESH_SECONDS = 1.0
# A type that nobody seems to serve reads the list again, at most this often:
# a worker that just started is seen at once, a flood of bad submits does
# not flood the store.
MISS_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class TaskTypeEntry:
    """One served task type, as ListTaskTypes tells of it."""

    name: str
    description: str
    # Live workers that serve it.
    workers: int
    # An example payload as JSON, or "".
    example: str


class TaskTypeCatalog:
    def __init__(
        self,
        registry: HandlerRegistry,
        store: TaskStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        # The last read of the live workers: when, who, and the types they
        # serve, derived once per read rather than once per submit.
        self._read: tuple[float, list[WorkerInfo], frozenset[str]] | None = None
        self._lock = asyncio.Lock()

    async def workers(self, *, max_age: float = FRESH_SECONDS) -> list[WorkerInfo]:
        """The live workers, as read at most `max_age` seconds ago."""
        return (await self._fresh(max_age))[1]

    async def _served(self, max_age: float = FRESH_SECONDS) -> frozenset[str]:
        """The types live workers serve, as read at most `max_age` seconds ago."""
        return (await self._fresh(max_age))[2]

    async def _fresh(self, max_age: float) -> tuple[float, list[WorkerInfo], frozenset[str]]:
        async with self._lock:
            read = self._read
            if read is None or time.monotonic() - read[0] >= max_age:
                workers = await self._store.live_workers(self._clock())
                read = self._read = (time.monotonic(), workers, _types_of(workers))
            return read

    async def remote_types(self, wanted: Collection[str]) -> frozenset[str]:
        """The types live workers serve, when some of `wanted` has no local
        handler (else nothing is read and the set is empty)."""
        if all(t in self._registry for t in wanted):
            return frozenset()
        served = await self._served()
        if not served.issuperset(t for t in wanted if t not in self._registry):
            served = await self._served(max_age=MISS_SECONDS)
        return served

    async def has_worker(self, task_type: str) -> bool:
        """Whether a live worker serves `task_type` (this process counts when
        it runs tasks: it registers too). Read again, at most every
        MISS_SECONDS, when none seemed to: a worker that just started is
        seen at once."""
        return task_type in await self._served() or task_type in await self._served(
            max_age=MISS_SECONDS
        )

    async def waiting_reason(self, record: TaskRecord) -> str | None:
        """Why a PENDING task waits when nobody serves its type (a task let
        in by --accept-unserved-types); None for any other task."""
        if record.state is not State.PENDING or record.type in self._registry:
            return None
        if record.type in await self._served():
            return None
        return f"waiting for a worker: no live worker serves task type {record.type!r}"

    async def entries(self) -> list[TaskTypeEntry]:
        """Every served type, by name: the local handlers' and the live
        workers' (read now: people ask this rarely and want it current)."""
        workers = await self.workers(max_age=0)
        infos = {info.name: info for info in type_infos(self._registry)}
        counts: dict[str, int] = {}
        for worker in workers:
            for info in worker.types:
                counts[info.name] = counts.get(info.name, 0) + 1
                infos.setdefault(info.name, info)
        return [
            TaskTypeEntry(name, info.description, counts.get(name, 0), info.example)
            for name, info in sorted(infos.items())
        ]


def _types_of(workers: Collection[WorkerInfo]) -> frozenset[str]:
    return frozenset(info.name for worker in workers for info in worker.types)


# -- the responses of ListTaskTypes and ListWorkers ------------------------------


def task_types_response(
    entries: Collection[TaskTypeEntry],
    settings: Mapping[str, TypeSettings],
    counts: Mapping[str, TypeCounts],
) -> pb.ListTaskTypesResponse:
    """Every served type, and every type the store keeps settings of (a type
    paused, or limited, before any process serves it), by name."""
    response = pb.ListTaskTypesResponse()
    served = {entry.name: entry for entry in entries}
    for name in sorted(served.keys() | settings.keys()):
        fill_task_type(
            response.task_types.add(),
            served.get(name) or TaskTypeEntry(name, "", 0, ""),
            settings.get(name) or TypeSettings(name),
            counts.get(name) or TypeCounts(),
        )
    return response


def fill_task_type(
    message: pb.TaskType, entry: TaskTypeEntry, settings: TypeSettings, counts: TypeCounts
) -> None:
    message.name = entry.name
    message.description = entry.description
    message.workers = entry.workers
    if entry.example:
        message.example_payload.update(json.loads(entry.example))
    _fill_limits(message.limits, settings.limits)
    _fill_limits(message.default_limits, settings.defaults)
    message.paused = settings.paused
    message.running = counts.running
    message.pending = counts.pending


def _fill_limits(message: pb.TaskTypeLimits, limits: TypeLimits) -> None:
    message.SetInParent()
    message.max_running = limits.max_running
    message.max_running_per_key = limits.max_running_per_key
    message.max_starts_per_second = limits.max_starts_per_second
    message.burst = limits.burst


def workers_response(workers: Collection[WorkerInfo]) -> pb.ListWorkersResponse:
    response = pb.ListWorkersResponse()
    for worker in workers:
        message = response.workers.add(
            id=worker.id,
            host=worker.host,
            pid=worker.pid,
            task_types=[info.name for info in worker.types],
            threads=worker.threads,
            running=worker.running,
        )
        set_timestamp(message.start_time, worker.started)
        set_timestamp(message.heartbeat_time, worker.heartbeat)
    return response
