"""ConveyorServer: a TaskEngine behind gRPC (servicer, health, reflection,
authentication, TLS)."""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conveyor.v1 import schedule_service_pb2, task_service_pb2
from conveyor_server._auth import TokenAuthInterceptor, load_tokens
from conveyor_server._config import ServerConfig
from conveyor_server._core import Gate, TaskCore
from conveyor_server._engine import TaskEngine
from conveyor_server._grpc_logs import quiet_undecodable_metadata
from conveyor_server._handlers import HandlerRegistry
from conveyor_server._http import HttpApi
from conveyor_server._http_auth import HttpAuth
from conveyor_server._metrics import ServerMetrics
from conveyor_server._runner import TaskRunner
from conveyor_server._schedule_servicer import ScheduleServicer, schedule_service_handler
from conveyor_server._schedule_ticker import ScheduleTicker
from conveyor_server._schedules import ScheduleCore
from conveyor_server._servicer import TaskServicer, service_handler
from conveyor_server._tls import http_ssl_context, server_credentials
from conveyor_server._tracing import rpc_interceptors
from conveyor_server.stores import TaskStore

logger = logging.getLogger(__name__)

SERVICE_NAME = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
SCHEDULE_SERVICE_NAME = schedule_service_pb2.DESCRIPTOR.services_by_name[
    "ScheduleService"
].full_name


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
        # gRPC keeps calls not yet handed to the application in a backlog;
        # past 1,000 of them it refuses a growing share with CANCELLED, and
        # all past 3,000 (its defaults). A burst of new watch streams meets
        # that long before --max-watchers, with a code no client retries:
        # let the backlog hold as many calls as the server admits streams.
        ("grpc.server.max_pending_requests", max(1000, config.max_watchers)),
        ("grpc.server.max_pending_requests_hard_limit", max(3000, 2 * config.max_watchers)),
    ]
    if config.max_connection_idle_seconds > 0:
        options.append(
            ("grpc.max_connection_idle_ms", int(config.max_connection_idle_seconds * 1000))
        )
    return options


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket already listens on `host:port`."""
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return False  # gRPC reports an unknown host itself
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # gRPC listens on IPv4 through [::] as well
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _port_in_use_message(address: str) -> str:
    return (
        f"cannot listen on {address}: the port is in use (another conveyor-server?) or the "
        "host is not this machine's; stop what holds it, or give another --port (CONVEYOR_PORT)"
    )


class ConveyorServer:
    """A running Conveyor service on a grpc.aio server.

    >>> server = ConveyorServer(ServerConfig(port=0))
    >>> port = await server.start()
    >>> ...
    >>> await server.stop()

    `interceptors` run on every gRPC call, after token authentication.
    `clock` is what "now" is for task times (delays, retry backoffs,
    schedules); tests move a clock of their own (conveyor.testing).
    """

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        store: TaskStore | None = None,
        *,
        interceptors: Sequence[aio.ServerInterceptor] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._interceptors = list(interceptors)
        # Read before anything opens, so a bad file stops the start at once.
        self._credentials = server_credentials(config)
        self._tokens = load_tokens(config)
        self._http_ssl = http_ssl_context(config) if config.http_port >= 0 else None
        self.engine = TaskEngine(config, registry, store, clock=clock)
        self.gate = Gate()
        # Built at start, once the store's signing key for page tokens is known.
        self.core: TaskCore | None = None
        self.servicer: TaskServicer | None = None
        # The schedules' operations, and what fires them; built at start.
        self.schedules: ScheduleCore | None = None
        self.ticker: ScheduleTicker | None = None
        self._health = health.aio.HealthServicer()
        self._server: aio.Server | None = None
        self.port: int | None = None
        # The HTTP/JSON API, unless --http-port is -1.
        self.http: HttpApi | None = None
        self.http_port: int | None = None
        self._stopping = False

    @property
    def store(self) -> TaskStore:
        return self.engine.store

    @property
    def registry(self) -> HandlerRegistry:
        return self.engine.registry

    @property
    def runner(self) -> TaskRunner:
        return self.engine.runner

    @property
    def metrics(self) -> ServerMetrics | None:
        return self.engine.metrics

    @property
    def metrics_port(self) -> int | None:
        return self.engine.metrics_port

    async def start(self) -> int:
        """Bind, start serving and running tasks; returns the bound port."""
        config = self.config
        engine = self.engine
        signing_key = await engine.store.signing_key()
        core = self.core = await engine.task_core(self.gate)
        schedules = self.schedules = ScheduleCore(core, clock=engine.clock)
        self.ticker = ScheduleTicker(core, config.schedule_tick_seconds, clock=engine.clock)
        servicer = self.servicer = TaskServicer(core)
        interceptors = (
            rpc_interceptors()
            + (
                []
                if self._tokens is None
                else [TokenAuthInterceptor(self._tokens, engine.observer)]
            )
            + self._interceptors
        )
        quiet_undecodable_metadata()
        server = aio.server(options=grpc_server_options(config), interceptors=interceptors)
        server.add_generic_rpc_handlers(
            (
                service_handler(servicer),
                schedule_service_handler(ScheduleServicer(schedules), engine.observer),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                SCHEDULE_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if config.port and port_in_use(config.host, config.port):
            # Said before gRPC tries, whose C core would log an error line of its own.
            raise OSError(_port_in_use_message(config.address))
        try:
            if self._credentials is None:
                port = server.add_insecure_port(self.config.address)
            else:
                port = server.add_secure_port(self.config.address, self._credentials)
        except RuntimeError:  # grpc says only "Failed to bind"
            port = 0
        if port == 0:
            raise OSError(_port_in_use_message(config.address))
        await engine.start(watchers=lambda: servicer.watchers)
        await server.start()
        self._server = server
        self.port = port
        if config.http_port >= 0:
            self.http = HttpApi(
                core,
                schedules,
                HttpAuth(self._tokens, signing_key),
                engine.throughput,
                engine.observer,
                max_body_bytes=config.max_message_bytes,
                ssl_context=self._http_ssl,
            )
            try:
                self.http_port = await self.http.start(
                    config.http_host or config.host, config.http_port
                )
            except OSError:
                await server.stop(None)
                raise
        self.ticker.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "conveyor serving on %s:%d (store %s, %d workers, task types: %s)",
            self.config.host,
            port,
            self.config.store,
            self.config.workers,
            ", ".join(self.registry.types()),
        )
        if self.http_port is not None:
            scheme = "http" if self._credentials is None else "https"
            host = config.http_host or config.host
            logger.info("HTTP/JSON API on %s://%s:%d/v1/", scheme, host, self.http_port)
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
            reach = f"{self.config.host}:{self.port}"
            if self.http_port is not None:
                reach += f" (gRPC) or {self.config.http_host or self.config.host}:"
                reach += f"{self.http_port} (HTTP)"
            logger.warning(
                "AUTHENTICATION IS OFF: anyone who can reach %s can submit, read and cancel "
                "every task; give --auth-tokens-file or CONVEYOR_AUTH_TOKENS",
                reach,
            )
        elif self._credentials is None:
            logger.warning(
                "TLS IS OFF: bearer tokens cross the network in clear text; give --tls-cert "
                "and --tls-key, unless a TLS proxy in front of this server terminates TLS"
            )

    async def _set_health(self, status: Any) -> None:
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)
        await self._health.set(SCHEDULE_SERVICE_NAME, status)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new work, give running
        tasks `grace` seconds (default: the configured shutdown grace), hand
        the rest back to the queue, then close."""
        if self._server is None or self._stopping:
            return
        self._stopping = True
        if self.ticker is not None:
            await self.ticker.stop()
        await self._health.enter_graceful_shutdown()
        self.gate.open = False
        await self.engine.drain(self.config.shutdown_grace_seconds if grace is None else grace)
        # Open watch streams end here; clients resume elsewhere.
        if self.http is not None:
            await self.http.stop()
        await self._server.stop(1.0)
        await self.engine.close()
        logger.info("stopped")

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
