from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.raw_api import Api
from tests.support.server import ServerThread


@pytest.fixture
def api(server: ServerThread) -> Iterator[Api]:
    client = Api(server.address)
    yield client
    client.close()


@pytest.fixture
def make_api(
    make_server: Callable[..., ServerThread],
) -> Iterator[Callable[..., tuple[ServerThread, Api]]]:
    clients: list[Api] = []

    def make(**overrides: Any) -> tuple[ServerThread, Api]:
        thread = make_server(**overrides)
        client = Api(thread.address)
        clients.append(client)
        return thread, client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def store_api(store_url: str, make_api: Callable[..., tuple[ServerThread, Api]]) -> Api:
    """A raw client of a server on each store."""
    _, api = make_api(store=store_url)
    return api
