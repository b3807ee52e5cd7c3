"""GetTaskLogs: a task's log lines, paged, for every face (gRPC, HTTP).

A page token names the last line returned, signed for the task, the
tenant and the attempt filter: a caller continues after it. While the task
is unfinished a token is always returned, even with no new line, so that a
caller can follow the logs by calling again with it.
"""

from __future__ import annotations

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import invalid_argument, not_found
from conveyor_server._page_token import BadPageToken, PageTokens
from conveyor_server._validation import check_id
from conveyor_server.stores import LogCursor, LogEntry, TaskStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class TaskLogReader:
    def __init__(self, store: TaskStore, page_tokens: PageTokens) -> None:
        self._store = store
        self._tokens = page_tokens

    async def read(self, request: pb.GetTaskLogsRequest, tenant: str) -> pb.GetTaskLogsResponse:
        check_id(request.id)
        if request.attempt < 0:
            raise invalid_argument([("attempt", "must be 0 (every attempt) or an attempt from 1")])
        if request.page_size < 0:
            raise invalid_argument([("page_size", "must not be negative; 0 means 100")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = _scope(tenant, request.id, request.attempt)
        after = self._cursor(request.page_token, scope)
        # The state is read first: once a finished task is seen, every line
        # of it is stored (the runner writes lines before outcomes).
        record = await self._store.get(request.id, tenant)
        if record is None:
            raise not_found(request.id)
        page = await self._store.read_logs(request.id, request.attempt, after, size + 1)
        lines = page.lines[:size]
        response = pb.GetTaskLogsResponse(
            lines=[_line(entry) for entry in lines],
            dropped=[
                pb.AttemptLogsDropped(attempt=attempt, lines=count)
                for attempt, count in sorted(page.dropped.items())
            ],
        )
        if len(page.lines) > size or not record.state.is_terminal:
            last = LogCursor(lines[-1].attempt, lines[-1].sequence) if lines else after
            response.next_page_token = self._tokens.mint_after(
                scope, f"{last.attempt}:{last.sequence}"
            )
        return response

    def _cursor(self, token: str, scope: str) -> LogCursor:
        if not token:
            return LogCursor()
        try:
            attempt, _, sequence = self._tokens.read_after(token, scope).partition(":")
            return LogCursor(int(attempt), int(sequence))
        except BadPageToken as exc:
            raise invalid_argument([("page_token", str(exc))]) from None
        except ValueError:
            raise invalid_argument(
                [("page_token", "page_token is not a token of GetTaskLogs")]
            ) from None


def _scope(tenant: str, task_id: str, attempt: int) -> str:
    return f"logs\0{tenant}\0{task_id}\0{attempt}"


def _line(entry: LogEntry) -> task_pb2.LogLine:
    line = task_pb2.LogLine(
        attempt=entry.attempt, sequence=entry.sequence, level=entry.level, message=entry.message
    )
    line.time.FromMicroseconds(round(entry.time * 1e6))
    return line
