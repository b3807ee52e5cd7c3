"""How the client of bench/peers.py drives each system, through its own client API.

Every adapter has the same calls: `submit(index)` sends one no-op task and
returns its handle; `wait(handle, index, timeout)` blocks until the task's
result is there and checks it; `close()`. Adapters of asyncio-only clients
(and Conveyor's `AsyncClient`) have the same calls as coroutines,
`asynchronous = True`, and `open()`, a coroutine that connects on the loop
the phases run on. Each library is imported inside its adapter, so this
module imports none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
INSTALL_HINT = "install the peers with: pip install -e '.[bench]'"
NOOP = ("sleep", {"seconds": 0})
"""Conveyor's built-in no-op: the `sleep` handler with zero seconds."""


class BenchFailure(Exception):
    """A task that did not complete as it should (wrong result, failure, time-out)."""


def require(module: str) -> Any:
    """Imports a peer library, or fails with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SystemExit(f"{module} is not installed ({exc}); {INSTALL_HINT}") from None


def bench_modules() -> None:
    """Makes the peers' app modules in bench/ importable."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))


def check_conveyor(task: Any, succeeded: Any) -> None:
    if task.state is not succeeded or task.result != {"slept": 0.0}:
        raise BenchFailure(f"task {task.id} ended {task.state.name} with {task.result!r}")


def check_value(kind: str, ident: str, value: Any, index: int) -> None:
    if value != index:
        raise BenchFailure(f"{kind} {ident} returned {value!r}, expected {index}")


# ---------------------------------------------------------------------------
# Threads: one adapter shared by every client thread.


class ConveyorAdapter:
    """`Client.submit("sleep", {"seconds": 0})`, then `TaskHandle.wait()`."""

    asynchronous = False

    def __init__(self, args: dict[str, Any]) -> None:
        conveyor = require("conveyor")
        self._succeeded = conveyor.TaskState.SUCCEEDED
        self._spec = conveyor.TaskSpec(*NOOP)
        self.client = conveyor.Client(args["address"], timeout=30)

    def submit(self, index: int) -> Any:
        return self.client.submit(*NOOP)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        check_conveyor(handle.wait(timeout=timeout), self._succeeded)

    def submit_batch(self, count: int) -> list[Any]:
        """`Client.submit_batch` of `count` no-op tasks."""
        handles: list[Any] = self.client.submit_batch([self._spec] * count)
        return handles

    def close(self) -> None:
        self.client.close()


class CeleryAdapter:
    """`noop.delay(index)`, then `AsyncResult.get(timeout=...)` (Redis pub/sub)."""

    asynchronous = False

    def __init__(self, args: dict[str, Any]) -> None:
        require("celery")
        bench_modules()
        from _peers_celery_app import app, noop

        self._app = app
        self._noop = noop

    def submit(self, index: int) -> Any:
        return self._noop.delay(index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        check_value("task", handle.id, handle.get(timeout=timeout), index)

    def close(self) -> None:
        self._app.close()


class RqAdapter:
    """`Queue.enqueue(noop, index)`, then `Job.latest_result(timeout=...)` (a blocking XREAD)."""

    asynchronous = False

    def __init__(self, args: dict[str, Any]) -> None:
        rq = require("rq")
        redis = require("redis")
        bench_modules()
        from _peers_rq_jobs import QUEUE, noop

        self._connection = redis.Redis.from_url(args["redis_url"])
        self._queue = rq.Queue(QUEUE, connection=self._connection)
        self._noop = noop
        self._successful = require("rq.results").Result.Type.SUCCESSFUL

    def submit(self, index: int) -> Any:
        return self._queue.enqueue(self._noop, index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        # RQ blocks for whole seconds; at least one.
        result = handle.latest_result(timeout=max(1, round(timeout)))
        if result is None:
            raise BenchFailure(f"job {handle.id} has no result after {timeout:.0f}s")
        if result.type != self._successful:
            raise BenchFailure(f"job {handle.id} ended {result.type.name}")
        check_value("job", handle.id, result.return_value, index)

    def close(self) -> None:
        self._connection.close()


class DramatiqAdapter:
    """`noop.send(index)`, then `Message.get_result(block=True)` (a blocking BRPOPLPUSH)."""

    asynchronous = False

    def __init__(self, args: dict[str, Any]) -> None:
        require("dramatiq")
        bench_modules()
        from _peers_dramatiq_app import backend, broker, noop

        self._backend = backend
        self._broker = broker
        self._noop = noop

    def submit(self, index: int) -> Any:
        return self._noop.send(index)

    def wait(self, handle: Any, index: int, timeout: float) -> None:
        # Dramatiq takes milliseconds and blocks for whole seconds; at least one.
        timeout_ms = max(1000, round(timeout * 1000))
        value = handle.get_result(backend=self._backend, block=True, timeout=timeout_ms)
        check_value("message", handle.message_id, value, index)

    def close(self) -> None:
        self._broker.close()


# ---------------------------------------------------------------------------
# Coroutines: one adapter shared by every coroutine of the client's event loop.


class AsyncConveyorAdapter:
    """`await AsyncClient.submit("sleep", {"seconds": 0})`, then `await handle.wait()`."""

    asynchronous = True

    def __init__(self, args: dict[str, Any]) -> None:
        self._conveyor = require("conveyor")
        self._succeeded = self._conveyor.TaskState.SUCCEEDED
        self._address: str = args["address"]
        self._client: Any = None

    async def open(self) -> None:
        # A grpc.aio channel belongs to the loop it is created on.
        self._client = self._conveyor.AsyncClient(self._address, timeout=30)

    async def submit(self, index: int) -> Any:
        return await self._client.submit(*NOOP)

    async def wait(self, handle: Any, index: int, timeout: float) -> None:  # noqa: ASYNC109
        check_conveyor(await handle.wait(timeout=timeout), self._succeeded)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class ArqAdapter:
    """`await pool.enqueue_job("noop", index)`, then `await Job.result(timeout=...)`."""

    asynchronous = True

    def __init__(self, args: dict[str, Any]) -> None:
        require("arq")
        bench_modules()
        from _peers_arq_app import POLL_DELAY_S, redis_settings

        self._settings = redis_settings()
        self._poll_delay = POLL_DELAY_S
        self._pool: Any = None

    async def open(self) -> None:
        from arq import create_pool

        self._pool = await create_pool(self._settings)

    async def submit(self, index: int) -> Any:
        return await self._pool.enqueue_job("noop", index)

    async def wait(self, handle: Any, index: int, timeout: float) -> None:  # noqa: ASYNC109
        # Job.result polls Redis for the result every poll_delay seconds.
        value = await handle.result(timeout=timeout, poll_delay=self._poll_delay)
        check_value("job", handle.job_id, value, index)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


ADAPTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "conveyor": ConveyorAdapter,
    "conveyor-async": AsyncConveyorAdapter,
    "celery": CeleryAdapter,
    "rq": RqAdapter,
    "dramatiq": DramatiqAdapter,
    "arq": ArqAdapter,
}
