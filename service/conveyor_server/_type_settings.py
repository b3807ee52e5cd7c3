"""UpdateTaskType, PauseTaskType and ResumeTaskType: their checks, and what
they ask of the store."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._errors import invalid_argument
from conveyor_server._handlers import TYPE_NAME
from conveyor_server._limits import limit_problems
from conveyor_server.stores._records import LIMIT_NAMES


def check_type_name(name: str) -> None:
    """A task type name as handlers are registered under (it need not be
    served yet: a type may be limited or paused before its workers start)."""
    if TYPE_NAME.fullmatch(name) is None:
        problem = (
            "is required: name a task type"
            if not name
            else "must start with a letter or underscore and use only letters, digits "
            "and . _ : - (at most 128 characters)"
        )
        raise invalid_argument([("name", problem)])


@dataclass(frozen=True, slots=True)
class LimitsChange:
    """What UpdateTaskType asks of `TaskStore.update_type`: new values, or
    the names of the limits to restore to their declared defaults."""

    limits: dict[str, float] | None
    restore: tuple[str, ...]


def limits_change(request: pb.UpdateTaskTypeRequest) -> LimitsChange:
    check_type_name(request.name)
    problems: list[tuple[str, str]] = []
    names: list[str] = []
    for index, path in enumerate(request.update_mask.paths):
        if path not in LIMIT_NAMES:
            problems.append(
                (
                    f"update_mask.paths[{index}]",
                    f"{path[:64]!r} is no limit; name some of {', '.join(LIMIT_NAMES)}",
                )
            )
        elif path not in names:
            names.append(path)
    if problems:
        raise invalid_argument(problems)
    if not names:
        names = list(LIMIT_NAMES)
    if request.restore_defaults:
        return LimitsChange(None, tuple(names))
    values = {name: float(getattr(request.limits, name)) for name in names}
    problems = [(f"limits.{name}", problem) for name, problem in limit_problems(values)]
    if problems:
        raise invalid_argument(problems)
    return LimitsChange(values, ())
