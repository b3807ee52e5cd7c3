"""Conveyor server: a gRPC task service running handlers on a thread pool.

Write handlers as plain functions and register them by type:

    from conveyor_server import task

    @task("resize_image")
    def resize_image(ctx, payload):
        ctx.report_progress(50, "resizing")
        return {"width": payload["width"] // 2}

then run `conveyor-server --tasks mypackage.tasks`.
"""

from conveyor_server._config import ServerConfig
from conveyor_server._context import TaskCancelled, TaskContext
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

__all__ = [
    "ConveyorServer",
    "ConveyorWorker",
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
