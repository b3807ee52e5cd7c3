"""Who runs tasks: the worker registrations every store keeps.

Each process that runs tasks (a `conveyor-server worker`, or a server with
worker threads) registers itself in its store and refreshes its entry while
it lives; an entry not refreshed within its time to live is dead and no
longer listed. API replicas read the live entries to learn which task types
some worker serves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskTypeInfo:
    """A task type as a worker serves it: what the API tells clients of it."""

    name: str
    # The handler's docstring, first paragraph.
    description: str = ""
    # An example payload as JSON, or "" when the handler gives none.
    example: str = ""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One process that runs tasks, as it last registered itself."""

    id: str
    host: str
    pid: int
    types: tuple[TaskTypeInfo, ...]
    threads: int
    running: int
    started: float
    heartbeat: float
    # Seconds after `heartbeat` when the entry counts as dead.
    ttl: float

    def alive(self, now: float) -> bool:
        return now < self.heartbeat + self.ttl

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerInfo:
        fields: dict[str, Any] = json.loads(text)
        fields["types"] = tuple(TaskTypeInfo(**t) for t in fields["types"])
        return cls(**fields)


class LocalWorkers:
    """The registrations of a store of one process: its own runner's."""

    __slots__ = ("_workers",)

    def __init__(self) -> None:
        self._workers: dict[str, WorkerInfo] = {}

    def register(self, worker: WorkerInfo) -> None:
        self._workers[worker.id] = worker

    def unregister(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def live(self, now: float) -> list[WorkerInfo]:
        for dead in [w.id for w in self._workers.values() if not w.alive(now)]:
            del self._workers[dead]
        return sorted(self._workers.values(), key=lambda w: (w.started, w.id))
