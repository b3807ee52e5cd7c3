"""The handler of bench/async_tasks.py: `await asyncio.sleep(seconds)`.

Every coroutine runs on the one handler loop of the worker, so a plain
counter is safe: each task returns how many ran at once when it started.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor_server import TaskContext, task

_running = 0


@task("nap")
async def nap(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Sleeps without holding a thread."""
    global _running
    _running += 1
    at_start = _running
    try:
        await asyncio.sleep(float(payload.get("seconds", 1.0)))
    finally:
        _running -= 1
    return {"running": at_start}
