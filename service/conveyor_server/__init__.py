"""Conveyor server: a gRPC task service running handlers on a thread pool.

Write handlers as plain functions and register them by type:

    from conveyor_server import task

    @task("resize_image")
    def resize_image(ctx, payload):
        ctx.report_progress(50, "resizing")
        return {"width": payload["width"] // 2}

then run `conveyor-server --tasks mypackage.tasks`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor_server._config import ServerConfig
    from conveyor_server._context import Dependency, TaskCancelled, TaskContext
    from conveyor_server._engine import TaskEngine
    from conveyor_server._handlers import (
        HandlerRegistry,
        InvalidPayload,
        NonRetryableError,
        TaskHandler,
        default_registry,
        task,
    )
    from conveyor_server._server import ConveyorServer, grpc_server_options
    from conveyor_server._worker import ConveyorWorker
    from conveyor_server.stores import MemoryStore, TaskStore, TaskSubscription

# Each export is imported on first use, so that `conveyor-server` (whose
# entry point lives in this package) can start in an environment without the
# server extra and say how to install it, instead of failing on an import.
_HOMES = {
    "ConveyorServer": "conveyor_server._server",
    "ConveyorWorker": "conveyor_server._worker",
    "Dependency": "conveyor_server._context",
    "HandlerRegistry": "conveyor_server._handlers",
    "InvalidPayload": "conveyor_server._handlers",
    "MemoryStore": "conveyor_server.stores",
    "NonRetryableError": "conveyor_server._handlers",
    "ServerConfig": "conveyor_server._config",
    "TaskCancelled": "conveyor_server._context",
    "TaskContext": "conveyor_server._context",
    "TaskEngine": "conveyor_server._engine",
    "TaskHandler": "conveyor_server._handlers",
    "TaskStore": "conveyor_server.stores",
    "TaskSubscription": "conveyor_server.stores",
    "default_registry": "conveyor_server._handlers",
    "grpc_server_options": "conveyor_server._server",
    "task": "conveyor_server._handlers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ConveyorServer",
    "ConveyorWorker",
    "Dependency",
    "HandlerRegistry",
    "InvalidPayload",
    "MemoryStore",
    "NonRetryableError",
    "ServerConfig",
    "TaskCancelled",
    "TaskContext",
    "TaskEngine",
    "TaskHandler",
    "TaskStore",
    "TaskSubscription",
    "default_registry",
    "grpc_server_options",
    "task",
]
