"""The pytest plugin of conveyor.testing, registered as `conveyor` under
the `pytest11` entry point, so installing conveyor is enough.

Fixtures:

- `conveyor_server`: a `ConveyorTestServer` for the test, running the
  handlers of `conveyor_registry` with the settings of `conveyor_config`;
- `conveyor_client`: its `Client`;
- `conveyor_async_client`: an `AsyncClient` on it (needs pytest-asyncio);
- `conveyor_registry` and `conveyor_config`: None (the default registry,
  default settings); override them in a conftest.py to change what the
  server runs.

This module is loaded in every pytest run of an environment with conveyor
installed, so it imports no server code until a test asks for a fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from conveyor._async_client import AsyncClient
from conveyor._client import Client
from conveyor.testing._server import ConveyorTestServer

if TYPE_CHECKING:
    from conveyor_server import HandlerRegistry, ServerConfig


@pytest.fixture
def conveyor_registry() -> HandlerRegistry | None:
    """The handlers the test server runs; None runs the default registry
    (every `@task` imported). Override to give a HandlerRegistry."""
    return None


@pytest.fixture
def conveyor_config() -> ServerConfig | None:
    """Settings of the test server (its store and address are always its
    own); None keeps the defaults. Override to give a ServerConfig."""
    return None


@pytest.fixture
def conveyor_server(
    conveyor_registry: HandlerRegistry | None, conveyor_config: ServerConfig | None
) -> Iterator[ConveyorTestServer]:
    """A real Conveyor server for this test, on `memory://`."""
    with ConveyorTestServer(conveyor_registry, config=conveyor_config) as server:
        yield server


@pytest.fixture
def conveyor_client(conveyor_server: ConveyorTestServer) -> Client:
    """A `Client` on this test's server."""
    return conveyor_server.client


async def _async_client(conveyor_server: ConveyorTestServer) -> AsyncIterator[AsyncClient]:
    """An `AsyncClient` on this test's server, on the test's event loop."""
    async with conveyor_server.async_client() as client:
        yield client


def _no_async_client() -> AsyncClient:
    """Stands in for conveyor_async_client where pytest-asyncio is missing."""
    pytest.fail("conveyor_async_client needs pytest-asyncio: pip install pytest-asyncio")


def _async_client_fixture() -> object:
    """The async fixture where pytest-asyncio runs it, else one that says
    what to install."""
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(_no_async_client, name="conveyor_async_client")
    return pytest_asyncio.fixture(_async_client, name="conveyor_async_client")


conveyor_async_client = _async_client_fixture()
