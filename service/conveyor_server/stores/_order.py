"""Creation order of the in-memory store's tasks, for newest-first listing."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from conveyor_server.stores._records import TaskRecord


class CreationOrder:
    """Records by creation number (seq), oldest first, for listing newest
    first before a cursor. Dropped records linger until the next compaction,
    which runs once they are more than half of the list."""

    __slots__ = ("_dead", "_records", "_seqs")

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._records: list[TaskRecord] = []
        self._dead = 0

    @property
    def live(self) -> int:
        """Records appended and not dropped since."""
        return len(self._seqs) - self._dead

    def append(self, record: TaskRecord) -> None:
        """Add a record newer than every other."""
        self._seqs.append(record.seq)
        self._records.append(record)

    def newest_first(
        self, before: int | None, live: Mapping[str, TaskRecord]
    ) -> Iterator[TaskRecord]:
        """The records still in `live`, newest first, created before seq
        `before` (all when None)."""
        end = len(self._seqs) if before is None else bisect_left(self._seqs, before)
        records = self._records
        for i in range(end - 1, -1, -1):
            record = records[i]
            if live.get(record.id) is record:
                yield record

    def dropped(self, live: Mapping[str, TaskRecord]) -> None:
        """A record left `live`; compact when the dead outnumber the rest."""
        self._dead += 1
        if self._dead > 1024 and self._dead * 2 > len(self._seqs):
            kept = [r for r in self._records if live.get(r.id) is r]
            self._records = kept
            self._seqs = [r.seq for r in kept]
            self._dead = 0
