"""A worker-only process: runs tasks from a shared store, serves no API.

`conveyor-server worker --store redis://...` claims tasks that any replica
accepted; its store renews their leases while they run and reaps the leases
of dead processes; on SIGTERM it drains like a server does.
"""

from __future__ import annotations

import logging

from conveyor_server._config import ServerConfig
from conveyor_server._core import Gate
from conveyor_server._engine import TaskEngine
from conveyor_server._handlers import HandlerRegistry
from conveyor_server._schedule_ticker import ScheduleTicker
from conveyor_server.stores import TaskStore

logger = logging.getLogger(__name__)


class ConveyorWorker:
    """Runs tasks of a shared store with no gRPC server of its own: a
    `TaskEngine` alone, and the schedules' ticker, which submits as the
    API does."""

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        store: TaskStore | None = None,
    ) -> None:
        if config.workers < 1:
            raise ValueError("a worker needs at least one worker thread (--workers)")
        self.config = config
        self.engine = TaskEngine(config, registry, store)
        if not self.engine.store.shared:
            raise ValueError(
                f"a worker process needs a store shared between processes (redis://), "
                f"not {config.store!r}: tasks of that store run in the server itself"
            )
        self.gate = Gate()
        self.ticker: ScheduleTicker | None = None
        self._stopping = False

    @property
    def store(self) -> TaskStore:
        return self.engine.store

    @property
    def registry(self) -> HandlerRegistry:
        return self.engine.registry

    @property
    def metrics_port(self) -> int | None:
        return self.engine.metrics_port

    async def start(self) -> None:
        self.ticker = ScheduleTicker(
            await self.engine.task_core(self.gate), self.config.schedule_tick_seconds
        )
        await self.engine.start()
        self.ticker.start()
        logger.info(
            "conveyor worker running tasks from %s (%d workers, task types: %s)",
            self.config.store,
            self.config.workers,
            ", ".join(self.registry.types()),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, give running tasks `grace` seconds, hand the rest
        back to the queue without spending an attempt, then close."""
        if self._stopping:
            return
        self._stopping = True
        if self.ticker is not None:
            await self.ticker.stop()
        self.gate.open = False
        await self.engine.drain(self.config.shutdown_grace_seconds if grace is None else grace)
        await self.engine.close()
        logger.info("stopped")
