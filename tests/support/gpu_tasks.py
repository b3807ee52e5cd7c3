"""The task type of one worker pool in the mixed-pool tests, loaded by a
worker subprocess with `--tasks tests.support.gpu_tasks`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from conveyor_server import InvalidPayload, TaskContext, task


def _check(payload: Mapping[str, Any]) -> None:
    if not isinstance(payload.get("model"), str):
        raise InvalidPayload('"model" is required: the name of the model to run')


@task("gpu_infer", validate=_check)
def gpu_infer(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Runs a model on the GPU pool."""
    return {"pool": "gpu", "pid": os.getpid(), "model": payload["model"]}
