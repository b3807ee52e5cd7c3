"""Task logs in the SDK: the lines a task's handler wrote through
`ctx.logger`, read page by page with GetTaskLogs (driven by `Client` and
`AsyncClient` as the flows of `_flows` are)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor import _core
from conveyor._flows import Emit, Flow, Sleep, _unary
from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb

# Lines asked for per call: the most the server returns.
_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a task's handler wrote through `ctx.logger`.

    `sequence` counts from 1 within the attempt, lines dropped by the
    server's bound (the latest 1,000 per attempt are kept) included: a
    first line with a sequence above 1 means earlier ones were dropped.
    """

    attempt: int
    sequence: int
    time: datetime
    # "DEBUG", "INFO", "WARNING", "ERROR" or "CRITICAL".
    level: str
    message: str
    raw: task_pb2.LogLine

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S} #{self.attempt} {self.level:<8} {self.message}"


def log_line_from_proto(line: task_pb2.LogLine) -> LogLine:
    time = _core.timestamp_to_datetime(line.time) or datetime.fromtimestamp(0, UTC)
    return LogLine(line.attempt, line.sequence, time, line.level, line.message, line)


def logs(task_id: str, attempt: int, follow: bool, poll_interval: float) -> Flow[None]:
    """Yield the task's log lines (`LogLine`), oldest first, attempt by
    attempt; with `attempt`, that attempt's only.

    `logs` ends with the last line stored now; `follow_logs` goes on
    reading, every `poll_interval` seconds while no line comes, and ends
    once the task is finished and every line was read. A task unknown to
    this tenant raises TaskNotFound.
    """
    token = ""
    while True:
        request = pb.GetTaskLogsRequest(
            id=task_id, attempt=attempt, page_size=_PAGE_SIZE, page_token=token
        )
        response = yield from _unary("GetTaskLogs", request, _core.DEFAULT_RETRY, None)
        for line in response.lines:
            yield Emit(log_line_from_proto(line))
        token = response.next_page_token
        full = len(response.lines) == _PAGE_SIZE
        if not token or not (full or follow):
            return
        if not full:
            yield Sleep(poll_interval)
