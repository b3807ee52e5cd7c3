"""The task type of the other worker pool in the mixed-pool tests, loaded
by a worker subprocess with `--tasks tests.support.cpu_tasks`."""

from __future__ import annotations

import os
from typing import Any

from conveyor_server import TaskContext, task


@task("cpu_resize")
def cpu_resize(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Resizes an image on the CPU pool."""
    return {"pool": "cpu", "pid": os.getpid()}
