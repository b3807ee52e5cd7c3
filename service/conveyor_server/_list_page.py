"""One ListTasks page: the view's fields of each task, within a byte budget."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._convert import fill_task
from conveyor_server._errors import invalid_argument
from conveyor_server.stores import TaskRecord

# A stock gRPC client refuses messages over 4 MiB. A page stops short of
# that (AIP-158 allows short pages), leaving room for the page token and
# the framing of each task.
MAX_PAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024

_FULL_VIEWS: dict[int, bool] = {
    pb.TASK_VIEW_UNSPECIFIED: True,
    pb.TASK_VIEW_FULL: True,
    pb.TASK_VIEW_BASIC: False,
}


def full_view(view: int) -> bool:
    """Whether a request's view includes payloads and results."""
    full = _FULL_VIEWS.get(view)
    if full is None:
        raise invalid_argument(
            [("view", f"{view} is not a task view; use TASK_VIEW_BASIC or TASK_VIEW_FULL")]
        )
    return full


def fill_page(
    response: pb.ListTasksResponse,
    records: Sequence[TaskRecord],
    *,
    full: bool,
    max_bytes: int = MAX_PAGE_BYTES,
) -> int:
    """Add tasks to `response` until the next would take it past
    `max_bytes`, but always at least one; returns how many it added."""
    tasks = response.tasks
    size = 0
    for index, record in enumerate(records):
        task = tasks.add()
        fill_task(task, record, full=full)
        # The task, its tag and its length prefix (at most 4 bytes under 256 MiB).
        size += task.ByteSize() + 5
        if size > max_bytes and index > 0:
            del tasks[-1]
            return index
    return len(records)
