"""Invariants every fault scenario must keep, checked from the outside.

- every acknowledged submit reaches a terminal state;
- no task goes back from a terminal state (in any snapshot seen later);
- the number of runs of a task (distinct attempts its handler started)
  never exceeds its max_attempts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from conveyor import Task


@dataclass
class Runs:
    """The run log of `fault_tasks.logged`, per task."""

    # task id -> list of (attempt, pid, event)
    events: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Runs:
        events: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        if path.exists():
            for line in path.read_text().splitlines():
                task_id, attempt, pid, event = line.split()
                events[task_id].append((int(attempt), int(pid), event))
        return cls(dict(events))

    def of(self, task_id: str) -> list[tuple[int, int, str]]:
        return self.events.get(task_id, [])

    def attempts_started(self, task_id: str) -> set[int]:
        return {attempt for attempt, _, event in self.of(task_id) if event == "start"}


@dataclass
class History:
    """What a scenario saw: acknowledged submits and snapshots over time."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # id -> max_attempts
    snapshots: dict[str, list[Task]] = field(default_factory=lambda: defaultdict(list))

    def saw(self, task: Task) -> None:
        self.snapshots[task.id].append(task)

    def problems(self, final: dict[str, Task | None], runs: Runs) -> list[str]:
        found: list[str] = []
        for task_id, max_attempts in self.acknowledged.items():
            task = final.get(task_id)
            if task is None:
                found.append(f"{task_id}: acknowledged, but the server does not know it")
                continue
            if not task.is_terminal:
                found.append(f"{task_id}: acknowledged, but still {task.state.name}")
            started = runs.attempts_started(task_id)
            if len(started) > max_attempts or any(a > max_attempts for a in started):
                found.append(
                    f"{task_id}: ran attempts {sorted(started)} with max_attempts {max_attempts}"
                )
        for task_id, seen in self.snapshots.items():
            terminal_at: int | None = None
            for task in sorted(seen, key=lambda t: t.version):
                if terminal_at is not None and not task.is_terminal:
                    found.append(
                        f"{task_id}: {task.state.name} at version {task.version} after a "
                        f"terminal state at version {terminal_at}"
                    )
                    break
                if task.is_terminal and terminal_at is None:
                    terminal_at = task.version
        return found
