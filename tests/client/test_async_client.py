"""What only the asyncio client has: `await`, `async for` and cancellation.

Every behaviour runs on both clients in test_clients.py; these tests use
`AsyncClient` natively, on pytest-asyncio's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import AsyncClient, AsyncTaskHandle, TaskState, WaitTimeout


async def test_native_await_and_async_for(aclient: AsyncClient, run_label: dict[str, str]) -> None:
    handle = await aclient.submit("sleep", {"seconds": 0.2}, labels=run_label)
    assert isinstance(handle, AsyncTaskHandle)
    snapshots = [task async for task in handle.watch()]
    assert snapshots[-1].state is TaskState.SUCCEEDED
    assert [task.id async for task in aclient.list(labels=run_label)] == [handle.id]
    assert (await handle.wait(timeout=10)).version == snapshots[-1].version


async def test_cancelling_a_wait_leaves_the_client_usable(aclient: AsyncClient) -> None:
    handle = await aclient.submit("wait_for_cancel", {"seconds": 30})
    try:
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(handle.wait(), 0.3)
        # Cancelled by the caller, not timed out by the SDK.
        assert not isinstance(caught.value, WaitTimeout)
        assert not (await handle.get()).is_terminal
    finally:
        await handle.cancel()
    assert (await handle.wait(timeout=10)).state is TaskState.CANCELLED


async def test_leaving_a_watch_early_closes_its_stream(scripted: tuple[Any, str]) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:
        async for task in client.watch("t-1"):
            assert task.version == 1
            break
        # The next call goes through; the watch was not resumed.
        assert (await client.get("t-1", rpc_timeout=5)).version == 1
    assert service.watch_since == [0]
