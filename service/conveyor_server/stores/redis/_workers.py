"""The worker registrations of a RedisStore: a hash of entries and a zset of
their expiry times, so that dead entries are found without reading all."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from conveyor_server.stores._errors import StoreUnavailable
from conveyor_server.stores._workers import WorkerInfo
from conveyor_server.stores.redis._connection import DOWN


class WorkerRegistry:
    """`P:workers` (id -> entry as JSON) and `P:worker_expiry` (id -> when
    the entry expires); the `live` script drops expired entries."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        live_script: AsyncScript,
        unavailable: Callable[[BaseException], StoreUnavailable],
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._live = live_script
        self._unavailable = unavailable

    async def register(self, worker: WorkerInfo) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(f"{self._prefix}:workers", worker.id, worker.to_json())
                pipe.zadd(
                    f"{self._prefix}:worker_expiry", {worker.id: worker.heartbeat + worker.ttl}
                )
                await pipe.execute()
        except DOWN as exc:
            raise self._unavailable(exc) from exc

    async def unregister(self, worker_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(f"{self._prefix}:workers", worker_id)
                pipe.zrem(f"{self._prefix}:worker_expiry", worker_id)
                await pipe.execute()
        except DOWN as exc:
            raise self._unavailable(exc) from exc

    async def live(self, now: float) -> list[WorkerInfo]:
        try:
            entries = await self._live(args=[self._prefix, now])
        except DOWN as exc:
            raise self._unavailable(exc) from exc
        workers = [WorkerInfo.from_json(entry) for entry in entries if entry is not None]
        return sorted(workers, key=lambda w: (w.started, w.id))
