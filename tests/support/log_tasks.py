"""Handlers that log through ctx.logger, for the tests of task logs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from conveyor_server import HandlerRegistry, TaskContext
from conveyor_server.stores._logs import MAX_MESSAGE_BYTES

registry = HandlerRegistry()
# Gates a "gated" task waits on, by the name in its payload.
gates: dict[str, threading.Event] = {}


@registry.task("chatty")
def chatty(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    for number in range(1, int(payload.get("lines", 3)) + 1):
        ctx.logger.info("attempt %d line %d", ctx.attempt, number)
    if ctx.attempt < int(payload.get("fail_until", 0)):
        ctx.logger.error("giving up on attempt %d", ctx.attempt)
        raise RuntimeError("not yet")
    return None


@registry.task("long_line")
def long_line(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    ctx.logger.warning("é" * MAX_MESSAGE_BYTES)
    try:
        raise ValueError("bad row")
    except ValueError:
        ctx.logger.exception("row %d failed", 7)


@registry.task("gated")
def gated(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    ctx.logger.info("started")
    gates[payload["gate"]].wait(30)
    ctx.logger.info("finishing")


@registry.task("async_chatty")
async def async_chatty(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    ctx.logger.info("awaiting")
    await asyncio.sleep(0)
    ctx.logger.info("awaited")
