"""A real Conveyor server for a test: in process, on `memory://`, on a free
port, on an event loop of its own, with a clock the test moves."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

from conveyor._async_client import AsyncClient
from conveyor._client import Client
from conveyor.testing._clock import TestClock

if TYPE_CHECKING:
    from conveyor_server import ConveyorServer, HandlerRegistry, ServerConfig

T = TypeVar("T")

# Long enough for any handler a test runs; a run that takes longer is stuck.
DEFAULT_IDLE_TIMEOUT = 30.0


def test_settings(config: ServerConfig | None, tasks: Sequence[str]) -> ServerConfig:
    """The user's settings, on `memory://` and a free local port, with no
    HTTP API or metrics port to collide with other tests."""
    try:
        from conveyor_server import ServerConfig
    except ImportError as exc:  # pragma: no cover - only without the server's dependencies
        raise ImportError(
            "conveyor.testing runs a real server in the test: install conveyor[server]"
        ) from exc

    base = config if config is not None else ServerConfig(workers=4, shutdown_grace_seconds=1.0)
    return dataclasses.replace(
        base,
        host="127.0.0.1",
        port=0,
        http_port=-1,
        metrics_port=0,
        store="memory://",
        tasks=tuple(base.tasks) + tuple(tasks),
    )


class ServerLoop:
    """Runs a ConveyorServer on a private event loop in a daemon thread, so
    that sync and async tests alike can call it without blocking it."""

    def __init__(self, config: ServerConfig, registry: HandlerRegistry | None) -> None:
        self.config = config
        self.clock = TestClock()
        self._registry = registry
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-test-server", daemon=True
        )
        self._server: ConveyorServer | None = None
        self.address = ""

    def start(self) -> None:
        self._thread.start()
        try:
            self._server = self.call(self._create).result(DEFAULT_IDLE_TIMEOUT)
            port = self.call(self._server.start).result(DEFAULT_IDLE_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.address = f"127.0.0.1:{port}"

    async def _create(self) -> ConveyorServer:
        from conveyor_server import ConveyorServer

        return ConveyorServer(self.config, self._registry, clock=self.clock)

    @property
    def server(self) -> ConveyorServer:
        if self._server is None:
            raise RuntimeError("the test server is not running; enter its `with` block first")
        return self._server

    def call(self, factory: Callable[[], Awaitable[T]]) -> Future[T]:
        """Run a coroutine on the server's loop; its future, for any thread."""

        async def run() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def until_idle(self) -> Future[None]:
        return self.call(self.server.runner.until_idle)

    def advance(self, seconds: float) -> Future[None]:
        """Move the clock, then let the runner and the schedules see it."""
        self.clock.advance(seconds)
        server = self.server

        async def catch_up() -> None:
            server.runner.work_available()
            if server.ticker is not None:
                await server.ticker.tick()

        return self.call(catch_up)

    def stop(self) -> None:
        """Stop the server and its loop; a second call does nothing."""
        if self._loop.is_closed():
            return
        if self._server is not None:
            server, self._server = self._server, None
            self.call(lambda: server.stop(0.0)).result(DEFAULT_IDLE_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEFAULT_IDLE_TIMEOUT)
        self._loop.close()


def _not_idle(timeout: float) -> TimeoutError:
    return TimeoutError(
        f"the test server still had work after {timeout:g}s: a handler that never returns, "
        "or tasks that keep submitting more; see what is still running "
        "(client.list(states=[TaskState.RUNNING]))"
    )


class _TestServer:
    """What both forms of the test server share: the server, on its own
    thread and loop, and what they tell of it."""

    __test__ = False

    def __init__(
        self,
        registry: HandlerRegistry | None,
        *,
        tasks: Sequence[str],
        config: ServerConfig | None,
    ) -> None:
        self._server = ServerLoop(test_settings(config, tasks), registry)

    @property
    def address(self) -> str:
        """Where the server listens, as `host:port`."""
        return self._server.address

    @property
    def clock(self) -> TestClock:
        """The server's clock: what "now" is for delays, backoffs and schedules."""
        return self._server.clock

    @property
    def server(self) -> ConveyorServer:
        """The running server, for what the clients do not show."""
        return self._server.server


class ConveyorTestServer(_TestServer):
    """A real Conveyor server for a test, with a `Client` on it.

    >>> with ConveyorTestServer(registry) as conveyor:
    ...     handle = conveyor.client.submit("resize", {"width": 64})
    ...     conveyor.run_until_idle()
    ...     assert handle.get().state is TaskState.SUCCEEDED

    `registry` holds the handlers (default: every `@task` of the modules
    imported, and of `tasks`); `config` any other server setting. The
    store is always `memory://` on a free port, and time stands still
    until `advance` moves it.
    """

    __test__ = False

    def __init__(
        self,
        registry: HandlerRegistry | None = None,
        *,
        tasks: Sequence[str] = (),
        config: ServerConfig | None = None,
    ) -> None:
        super().__init__(registry, tasks=tasks, config=config)
        self._client: Client | None = None

    def __enter__(self) -> ConveyorTestServer:
        self._server.start()
        self._client = Client(self.address)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._server.stop()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the test server is not running; enter its `with` block first")
        return self._client

    def async_client(self) -> AsyncClient:
        """A new `AsyncClient` on this server, for the running event loop;
        close it (`async with`) when done."""
        return AsyncClient(self.address)

    def run_until_idle(self, timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        """Run queued work to completion: return once no task is due or
        running. Tasks due later (a delay, a retry's backoff) stay pending
        until `advance` makes them due."""
        waiting = self._server.until_idle()
        try:
            waiting.result(timeout)
        except TimeoutError:
            waiting.cancel()
            raise _not_idle(timeout) from None

    def advance(self, seconds: float) -> None:
        """Move the server's clock `seconds` forward: delayed tasks, retry
        backoffs and schedule fires that fall due start running (call
        `run_until_idle` to wait for them). Execution timeouts and stop
        graces are not on this clock; they run in real time."""
        self._server.advance(seconds).result(DEFAULT_IDLE_TIMEOUT)


class AsyncConveyorTestServer(_TestServer):
    """`ConveyorTestServer` for async tests: an `AsyncClient` on a real
    server, and awaitable `run_until_idle` and `advance`.

    >>> async with AsyncConveyorTestServer(registry) as conveyor:
    ...     handle = await conveyor.client.submit("resize", {"width": 64})
    ...     await conveyor.run_until_idle()
    """

    __test__ = False

    def __init__(
        self,
        registry: HandlerRegistry | None = None,
        *,
        tasks: Sequence[str] = (),
        config: ServerConfig | None = None,
    ) -> None:
        super().__init__(registry, tasks=tasks, config=config)
        self._client: AsyncClient | None = None
        self._sync_client: Client | None = None

    async def __aenter__(self) -> AsyncConveyorTestServer:
        await asyncio.to_thread(self._server.start)
        self._client = AsyncClient(self.address)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None
        await asyncio.to_thread(self._server.stop)

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("the test server is not running; enter its `async with` first")
        return self._client

    @property
    def sync_client(self) -> Client:
        """A blocking `Client` on the same server, made on first use."""
        if self._sync_client is None:
            self._sync_client = Client(self.address)
        return self._sync_client

    async def run_until_idle(self) -> None:
        """Run queued work to completion: return once no task is due or
        running; tasks due later stay pending until `advance`. Work still
        running after 30 s raises TimeoutError; wrap the call in
        `asyncio.timeout` to give up sooner."""
        waiting = asyncio.wrap_future(self._server.until_idle())
        try:
            await asyncio.wait_for(waiting, DEFAULT_IDLE_TIMEOUT)
        except TimeoutError:
            raise _not_idle(DEFAULT_IDLE_TIMEOUT) from None

    async def advance(self, seconds: float) -> None:
        """Move the server's clock `seconds` forward (see
        `ConveyorTestServer.advance`)."""
        await asyncio.wrap_future(self._server.advance(seconds))
