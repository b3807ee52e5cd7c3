from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conveyor_testing import ServerThread, test_config


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
