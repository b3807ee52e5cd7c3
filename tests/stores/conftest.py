"""Every store, chosen by URL (`store_url`, in tests/conftest.py): the
contract tests run once per store.

The Redis params need a reachable Redis (they skip without one, and fail
under CI=true); the others need nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor_server._config import ServerConfig
from conveyor_server.stores import TaskStore, open_store

# A lease short enough to lapse within a test, with a small margin for
# clock skew, for the tests of stores shared by several processes.
SHORT_LEASE_SECONDS = 1.0
SHORT_LEASE_MARGIN = 0.1


def open_test_store(
    url: str,
    *,
    max_queue: int = 1000,
    retention_count: int = 1000,
    lease_seconds: float = 30.0,
) -> TaskStore:
    """A store opened the way the server opens it, with limits of the test's choosing."""
    return open_store(
        ServerConfig(
            store=url,
            max_queue=max_queue,
            retention_count=retention_count,
            lease_seconds=lease_seconds,
        )
    )


def with_query(url: str, option: str) -> str:
    """The URL with one more query option, `name=value`."""
    return f"{url}{'&' if '?' in url else '?'}{option}"


class StoreOpener:
    """Opens stores on one URL (one per call, as separate processes would)
    and closes those still open when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._open: list[TaskStore] = []

    def __call__(self, *, short_lease: bool = False, **limits: Any) -> TaskStore:
        """A store with these limits; `short_lease` gives it a lease of about
        a second, with a small margin for clock skew."""
        url = self.url
        if short_lease:
            url = with_query(url, f"lease_margin={SHORT_LEASE_MARGIN}")
            limits.setdefault("lease_seconds", SHORT_LEASE_SECONDS)
        store = open_test_store(url, **limits)
        self._open.append(store)
        return store

    async def close(self, store: TaskStore) -> None:
        self._open.remove(store)
        await store.close()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[StoreOpener]:
    opener = StoreOpener(store_url)
    yield opener
    await opener.close_all()


@pytest.fixture
async def store(make_store: StoreOpener) -> TaskStore:
    """One store with roomy limits; closed after the test."""
    return make_store()


@pytest.fixture
async def second_store(store: TaskStore, make_store: StoreOpener) -> TaskStore:
    """Another instance on the same URL, as another process would open it
    (tests using it are marked for the shared stores only)."""
    assert store.lease_seconds is not None, "a store of one process cannot be shared"
    return make_store()
