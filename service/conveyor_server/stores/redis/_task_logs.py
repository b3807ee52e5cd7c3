"""Task logs on Redis: a list per attempt under the task, trimmed to its
bound, written and read by one script each (see `stores._logs`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor_server.stores._logs import (
    MAX_LINES_PER_ATTEMPT,
    LogBatch,
    LogCursor,
    LogPage,
    decode_line,
    encode_line,
    last_entries,
)

# Runs a script with its arguments after the prefix.
ScriptCall = Callable[[list[Any]], Awaitable[Any]]


class RedisLogs:
    def __init__(self, append: ScriptCall, read: ScriptCall) -> None:
        self._append = append
        self._read = read

    async def append(self, batches: Sequence[LogBatch]) -> None:
        args: list[Any] = [MAX_LINES_PER_ATTEMPT]
        for batch in last_entries(batches):
            if batch.entries:
                args += [batch.task_id, batch.attempt, len(batch.entries)]
                args += [encode_line(entry) for entry in batch.entries]
        if len(args) > 1:
            await self._append(args)

    async def read(self, task_id: str, attempt: int, after: LogCursor, limit: int) -> LogPage:
        dropped, lines = await self._read([task_id, attempt, after.attempt, after.sequence, limit])
        return LogPage(
            [decode_line(int(lines[i]), lines[i + 1]) for i in range(0, len(lines), 2)],
            {int(dropped[i]): int(dropped[i + 1]) for i in range(0, len(dropped), 2)},
        )
