"""Handlers for the fault tests, loaded by server and worker subprocesses
with `--tasks tests.support.fault_tasks`.

`logged` appends a line per event to the file named by CONVEYOR_TEST_RUN_LOG:
`<task id> <attempt> <pid> start|end|stopped`. Lines are short and written
with O_APPEND, so processes writing at once never interleave within a line.
"""

from __future__ import annotations

import os
from typing import Any

from conveyor_server import TaskContext, task


def _log(ctx: TaskContext, event: str) -> None:
    path = os.environ["CONVEYOR_TEST_RUN_LOG"]
    line = f"{ctx.task_id} {ctx.attempt} {os.getpid()} {event}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task("logged")
def logged(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Runs for `seconds` unless asked to stop; records every run."""
    _log(ctx, "start")
    ctx.report_progress(50, f"running in {os.getpid()}")
    if ctx.wait(float(payload.get("seconds", 0))):
        _log(ctx, "stopped")
        ctx.raise_if_cancelled()
    _log(ctx, "end")
    return {"pid": os.getpid(), "attempt": ctx.attempt}
