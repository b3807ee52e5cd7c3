from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerThread, drop_redis_prefix, need_server, test_config

# Runs pytest inside a test: how conveyor.testing's plugin is tried as its users run it.
pytest_plugins = ("pytester",)

# Servers started as processes serve their HTTP API on a free port, not on
# the default 8080 that another server on this machine may hold.
os.environ.setdefault("CONVEYOR_HTTP_PORT", "0")

REDIS_HOST = os.environ.get("CONVEYOR_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CONVEYOR_TEST_REDIS_PORT", "6379"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> tuple[str, int]:
    """The local Redis, as (host, port); skips (fails under CI) without one."""
    if not _reachable(REDIS_HOST, REDIS_PORT):
        need_server(f"Redis at {REDIS_HOST}:{REDIS_PORT}")
    return REDIS_HOST, REDIS_PORT


@pytest.fixture
def redis_url(redis_server: tuple[str, int]) -> Iterator[str]:
    """A store URL on the local Redis with a key prefix of this test's own;
    the test's keys are deleted afterwards."""
    host, port = redis_server
    prefix = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"redis://{host}:{port}/0?prefix={prefix}"
    drop_redis_prefix(host, port, prefix)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """One real server shared by the tests that need no special settings."""
    thread = ServerThread(test_config()).start()
    yield thread
    thread.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    """A fresh server with its own settings: make_server(max_queue=3)."""
    started: list[ServerThread] = []

    def make(**overrides: Any) -> ServerThread:
        thread = ServerThread(test_config(**overrides)).start()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.stores("redis")` keeps only those params of `store_url`:
    a behaviour that only some stores have is not run, and so not skipped,
    on the others."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("stores")
        params = getattr(getattr(item, "callspec", None), "params", {})
        if marker is not None and params.get("store_url", marker.args[0]) not in marker.args:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of each kind, for tests that must hold on
    every store."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tasks.db"
    url: str = request.getfixturevalue("redis_url")
    return url
