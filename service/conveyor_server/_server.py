"""Assembles a Conveyor server: store, runner, servicer, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conveyor.v1 import task_service_pb2
from conveyor_server._auth import TokenAuthInterceptor, load_tokens
from conveyor_server._config import ServerConfig
from conveyor_server._handlers import HandlerRegistry
from conveyor_server._observer import NULL_OBSERVER
from conveyor_server._page_token import PageTokens
from conveyor_server._servicer import Gate, TaskServicer, service_handler
from conveyor_server._tls import server_credentials
from conveyor_server._validation import RequestValidator
from conveyor_server._worker import build_metrics, build_registry, build_runner, start_metrics
from conveyor_server.stores import TaskStore, open_store

logger = logging.getLogger(__name__)

SERVICE_NAME = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
PURGE_INTERVAL_SECONDS = 1.0


def grpc_server_options(config: ServerConfig) -> list[tuple[str, Any]]:
    """Channel arguments of the server, set on purpose rather than inherited."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Ping idle connections so dead watchers are found and freed.
        ("grpc.keepalive_time_ms", int(config.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client keepalive pings down to every 10 s, even with no call.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Two servers must never share a port by accident.
        ("grpc.so_reuseport", 0),
    ]
    if config.max_connection_idle_seconds > 0:
        options.append(
            ("grpc.max_connection_idle_ms", int(config.max_connection_idle_seconds * 1000))
        )
    return options


class ConveyorServer:
    """A running Conveyor service on a grpc.aio server.

    >>> server = ConveyorServer(ServerConfig(port=0))
    >>> port = await server.start()
    >>> ...
    >>> await server.stop()
    """

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        store: TaskStore | None = None,
    ) -> None:
        self.config = config
        # Read before anything opens, so a bad file stops the start at once.
        self._credentials = server_credentials(config)
        self._tokens = load_tokens(config)
        self.registry = build_registry(config, registry)
        self.store: TaskStore = store if store is not None else open_store(config)
        self.metrics = build_metrics(config)
        observer = self.metrics or NULL_OBSERVER
        self.runner = build_runner(config, self.store, self.registry, observer)
        self.gate = Gate()
        self.servicer = TaskServicer(
            self.store,
            self.runner,
            RequestValidator(
                self.registry,
                max_payload_bytes=config.max_payload_bytes,
                default_max_attempts=config.default_max_attempts,
                default_timeout=config.default_timeout_seconds or None,
            ),
            PageTokens(os.urandom(32)),
            self.gate,
            max_watchers=config.max_watchers,
            max_watchers_per_tenant=config.max_watchers_per_tenant or None,
            observer=observer,
        )
        self._health = health.aio.HealthServicer()
        self._server: aio.Server | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._stopping = False

    async def start(self) -> int:
        """Bind, start serving and running tasks; returns the bound port."""
        interceptors = (
            []
            if self._tokens is None
            else [TokenAuthInterceptor(self._tokens, self.metrics or NULL_OBSERVER)]
        )
        server = aio.server(options=grpc_server_options(self.config), interceptors=interceptors)
        server.add_generic_rpc_handlers((service_handler(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if self._credentials is None:
            port = server.add_insecure_port(self.config.address)
        else:
            port = server.add_secure_port(self.config.address, self._credentials)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.address}")
        servicer = self.servicer
        self.metrics_port = await start_metrics(
            self.metrics, self.config, self.store, self.runner, lambda: servicer.watchers
        )
        self.servicer.page_tokens = PageTokens(await self.store.signing_key())
        await self.runner.start()
        await server.start()
        self._server = server
        self.port = port
        self._maintenance = asyncio.create_task(self._purge_loop(), name="conveyor-retention")
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "conveyor serving on %s:%d (store %s, %d workers, task types: %s)",
            self.config.host,
            port,
            self.config.store,
            self.config.workers,
            ", ".join(self.registry.types()),
        )
        self._log_security()
        return port

    def _log_security(self) -> None:
        tls = "off"
        if self._credentials is not None:
            tls = (
                "on, client certificates required (mutual TLS)"
                if self.config.tls_client_ca
                else "on"
            )
        tenants = "off"
        if self._tokens is not None:
            count = len(self._tokens.tenants)
            tenants = f"on, {count} tenant{'' if count == 1 else 's'}"
        logger.info("TLS: %s; token authentication: %s", tls, tenants)
        if self._tokens is None:
            logger.warning(
                "AUTHENTICATION IS OFF: anyone who can reach %s can submit, read and cancel "
                "every task; give --auth-tokens-file or CONVEYOR_AUTH_TOKENS",
                f"{self.config.host}:{self.port}",
            )
        elif self._credentials is None:
            logger.warning(
                "TLS IS OFF: bearer tokens cross the network in clear text; give --tls-cert "
                "and --tls-key, unless a TLS proxy in front of this server terminates TLS"
            )

    async def _set_health(self, status: Any) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL_SECONDS)
            try:
                await self.store.purge(time.time() - self.config.retention_seconds)
            except Exception:
                logger.exception("retention sweep failed")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new work, give running
        tasks `grace` seconds (default: the configured shutdown grace), hand
        the rest back to the queue, then close."""
        if self._server is None or self._stopping:
            return
        self._stopping = True
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        await self._health.enter_graceful_shutdown()
        self.gate.open = False
        logger.info("shutting down: %d running tasks get %gs", self.runner.running_count, grace)
        handed_back = await self.runner.drain(grace)
        if handed_back:
            logger.info("handed %d unfinished tasks back to the queue", handed_back)
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        # Open watch streams end here; clients resume elsewhere.
        await self._server.stop(1.0)
        await self.runner.close()
        await self.store.close()
        if self.metrics is not None:
            await self.metrics.stop()
        logger.info("stopped")

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
