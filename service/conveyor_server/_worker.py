"""A worker-only process: runs tasks from a shared store, serves no API.

`conveyor-server worker --store redis://...` claims tasks that any replica
accepted, renews their leases while they run, reaps the leases of dead
processes, and on SIGTERM drains like a server does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from conveyor_server._builtin_tasks import register_builtin_tasks
from conveyor_server._config import ServerConfig
from conveyor_server._handlers import HandlerRegistry, default_registry, import_task_modules
from conveyor_server._metrics import ServerMetrics
from conveyor_server._observer import NULL_OBSERVER, TaskObserver
from conveyor_server._runner import RetryPolicy, TaskRunner
from conveyor_server.stores import TaskStore, open_store

logger = logging.getLogger(__name__)


def build_registry(config: ServerConfig, registry: HandlerRegistry | None) -> HandlerRegistry:
    """Built-in tasks, then the configured modules' and the given handlers."""
    combined = HandlerRegistry()
    register_builtin_tasks(combined)
    import_task_modules(list(config.tasks))
    combined.update(registry if registry is not None else default_registry)
    return combined


def build_runner(
    config: ServerConfig,
    store: TaskStore,
    registry: HandlerRegistry,
    observer: TaskObserver = NULL_OBSERVER,
) -> TaskRunner:
    return TaskRunner(
        store,
        registry,
        workers=config.workers,
        retry_policy=RetryPolicy(config.retry_backoff_seconds, config.retry_backoff_max_seconds),
        stop_grace=config.stop_grace_seconds,
        observer=observer,
    )


def build_metrics(config: ServerConfig) -> ServerMetrics | None:
    """The metrics of a process with --metrics-port set, else None: a
    server without them records nothing."""
    return ServerMetrics() if config.metrics_port else None


async def start_metrics(
    metrics: ServerMetrics | None,
    config: ServerConfig,
    store: TaskStore,
    runner: TaskRunner,
    watchers: Callable[[], int] | None = None,
) -> int | None:
    """Serve the metrics endpoint; returns its port, None without metrics."""
    if metrics is None:
        return None
    return await metrics.start(
        config.metrics_host or config.host,
        config.metrics_port,
        store,
        running=lambda: runner.running_count,
        watchers=watchers,
    )


class ConveyorWorker:
    """Runs tasks of a shared store with no gRPC server of its own."""

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        store: TaskStore | None = None,
    ) -> None:
        if config.workers < 1:
            raise ValueError("a worker needs at least one worker thread (--workers)")
        self.config = config
        self.registry = build_registry(config, registry)
        self.store: TaskStore = store if store is not None else open_store(config)
        if self.store.lease_seconds is None:
            raise ValueError(
                f"a worker process needs a store shared between processes (redis://), "
                f"not {config.store!r}: tasks of that store run in the server itself"
            )
        self.metrics = build_metrics(config)
        self.runner = build_runner(config, self.store, self.registry, self.metrics or NULL_OBSERVER)
        self.metrics_port: int | None = None
        self._stopping = False

    async def start(self) -> None:
        self.metrics_port = await start_metrics(self.metrics, self.config, self.store, self.runner)
        await self.runner.start()
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
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        logger.info("shutting down: %d running tasks get %gs", self.runner.running_count, grace)
        handed_back = await self.runner.drain(grace)
        if handed_back:
            logger.info("handed %d unfinished tasks back to the queue", handed_back)
        await self.runner.close()
        await self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()
        logger.info("stopped")
