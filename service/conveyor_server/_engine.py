"""TaskEngine: what runs tasks, with or without an API in front.

The engine is the handler registry, the store, the runner, the metrics and
the retention sweep, started and stopped together. `ConveyorServer` wraps
it with gRPC; `ConveyorWorker` runs it alone on a shared store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from conveyor_server._attempts import RetryPolicy
from conveyor_server._catalog import TaskTypeCatalog
from conveyor_server._config import ServerConfig
from conveyor_server._core import Gate, TaskCore
from conveyor_server._handlers import HandlerRegistry, default_registry, import_task_modules
from conveyor_server._metrics import ServerMetrics
from conveyor_server._observer import ObserverPair, TaskObserver
from conveyor_server._page_token import PageTokens
from conveyor_server._presence import WorkerPresence
from conveyor_server._runner import TaskRunner
from conveyor_server._stats import Throughput
from conveyor_server._validation import RequestValidator
from conveyor_server.builtin import register_builtin_tasks
from conveyor_server.stores import StoreError, TaskStore, TypeLimits, open_store

logger = logging.getLogger(__name__)

RETENTION_SWEEP_SECONDS = 1.0
# How often declaring the handlers' limits is tried again while the store is down.
DECLARE_RETRY_SECONDS = 1.0


def build_registry(config: ServerConfig, registry: HandlerRegistry | None) -> HandlerRegistry:
    """Built-in tasks, then the configured modules' and the given handlers."""
    combined = HandlerRegistry()
    register_builtin_tasks(combined, config)
    import_task_modules(list(config.tasks))
    combined.update(registry if registry is not None else default_registry)
    return combined


class TaskEngine:
    """Runs the tasks of one store in this process.

    >>> engine = TaskEngine(ServerConfig(store="redis://localhost:6379/0"))
    >>> await engine.start()
    >>> ...
    >>> await engine.drain(30.0)
    >>> await engine.close()
    """

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        store: TaskStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        # What "now" is for every task time: the wall clock, or a clock a
        # test moves (conveyor.testing) to make delays and backoffs due.
        self.clock = clock
        self.registry = build_registry(config, registry)
        self.store: TaskStore = store if store is not None else open_store(config)
        # Without --metrics-port no metrics are recorded; the throughput
        # behind /v1/stats always is.
        self.metrics = ServerMetrics() if config.metrics_port else None
        self.throughput = Throughput()
        self.observer: TaskObserver = (
            self.throughput if self.metrics is None else ObserverPair(self.metrics, self.throughput)
        )
        self.runner = TaskRunner(
            self.store,
            self.registry,
            workers=config.workers,
            retry_policy=RetryPolicy(
                config.retry_backoff_seconds, config.retry_backoff_max_seconds
            ),
            stop_grace=config.stop_grace_seconds,
            max_result_bytes=config.max_result_bytes,
            async_tasks=config.async_tasks,
            observer=self.observer,
            clock=clock,
        )
        # A process that runs tasks registers in the store, so that API
        # replicas know which types live workers serve.
        self.presence = (
            WorkerPresence(
                self.store,
                self.registry,
                threads=config.workers,
                running=lambda: self.runner.running_count,
                clock=clock,
            )
            if config.workers > 0
            else None
        )
        self.metrics_port: int | None = None
        self._retention: asyncio.Task[None] | None = None
        self._declaring: asyncio.Task[None] | None = None

    async def task_core(self, gate: Gate) -> TaskCore:
        """The TaskService operations on this engine's store and handlers,
        open while `gate` is: what the API serves, and the path by which
        schedules submit in every process."""
        config = self.config
        return TaskCore(
            self.store,
            RequestValidator(
                self.registry,
                max_payload_bytes=config.max_payload_bytes,
                default_max_attempts=config.default_max_attempts,
                default_timeout=config.default_timeout_seconds or None,
                shared=self.store.shared,
                accept_unserved=config.accept_unserved_types,
            ),
            PageTokens(await self.store.signing_key()),
            gate,
            TaskTypeCatalog(self.registry, self.store, clock=self.clock),
            max_watchers=config.max_watchers,
            max_watchers_per_tenant=config.max_watchers_per_tenant or None,
            explain_waits=config.accept_unserved_types and self.store.shared,
            operators=config.operator_set,
            clock=self.clock,
            observer=self.observer,
        )

    async def start(self, watchers: Callable[[], int] | None = None) -> None:
        """Serve metrics (`watchers` counts open watch streams for them),
        start running tasks and sweeping finished ones."""
        if self.metrics is not None:
            runner = self.runner
            self.metrics_port = await self.metrics.start(
                self.config.metrics_host or self.config.host,
                self.config.metrics_port,
                self.store,
                running=lambda: runner.running_count,
                watchers=watchers,
            )
        if self.config.workers > 0:
            await self._declare_limits()
        await self.runner.start()
        if self.presence is not None:
            await self.presence.start()
        self._retention = asyncio.create_task(self._sweep(), name="conveyor-retention")

    async def drain(self, grace: float) -> None:
        """Stop claiming, give running tasks `grace` seconds, then hand the
        rest back to the queue without spending an attempt."""
        logger.info("shutting down: %d running tasks get %gs", self.runner.running_count, grace)
        if self.presence is not None:
            await self.presence.stop()
        handed_back = await self.runner.drain(grace)
        if handed_back:
            logger.info("handed %d unfinished tasks back to the queue", handed_back)

    def end_grace(self) -> None:
        """Cut a `drain` short: running tasks go back to the queue now."""
        self.runner.end_grace()

    async def close(self) -> None:
        """Stop the sweep and the runner, close the store and the metrics."""
        for background in (self._retention, self._declaring):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        if self.presence is not None:
            await self.presence.stop()
        await self.runner.close()
        await self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()

    async def _declare_limits(self) -> None:
        """Write the limits this process's handlers declare to the store, as
        their types' defaults (the last process to start wins), before it
        claims any task; while the store is down, keep trying in the
        background, as the runner does."""
        defaults = {registration.type: registration.limits for registration in self.registry}
        try:
            await self.store.declare_type_defaults(defaults, self.clock())
        except StoreError as exc:
            logger.warning(
                "could not declare the task types' limits (%s); retrying every %gs",
                exc,
                DECLARE_RETRY_SECONDS,
            )
            self._declaring = asyncio.create_task(
                self._keep_declaring(defaults), name="conveyor-declare-limits"
            )

    async def _keep_declaring(self, defaults: dict[str, TypeLimits]) -> None:
        while True:
            await asyncio.sleep(DECLARE_RETRY_SECONDS)
            try:
                await self.store.declare_type_defaults(defaults, self.clock())
            except StoreError:
                continue
            logger.info("declared the task types' limits")
            return

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)
            try:
                await self.store.purge(self.clock() - self.config.retention_seconds)
            except Exception:
                logger.exception("retention sweep failed")
