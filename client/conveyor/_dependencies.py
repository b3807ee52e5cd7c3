"""What a submit waits for: `depends_on` entries turned into the ids of
existing tasks and the indexes of earlier requests of the same batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from conveyor._types import Dependency, TaskSpec
from conveyor.v1 import task_service_pb2


def add_dependencies(
    request: task_service_pb2.SubmitTaskRequest,
    dependencies: Iterable[Dependency],
    batch: Sequence[TaskSpec],
) -> None:
    """Fill `depends_on` and `depends_on_requests`; `batch` is the
    `submit_batch` the request is part of (empty for a lone submit, whose
    request may then carry ids only, and so can join a coalesced batch)."""
    if isinstance(dependencies, str):  # its characters would be taken as ids
        raise TypeError(f"depends_on takes a list of tasks, not the string {dependencies!r}")
    for dependency in dependencies:
        _add(request, dependency, batch)


def _add(
    request: task_service_pb2.SubmitTaskRequest,
    dependency: Dependency,
    batch: Sequence[TaskSpec],
) -> None:
    """An existing task goes to `depends_on`, an earlier spec of the batch
    to `depends_on_requests`; the service refuses an index that is not earlier."""
    match dependency:
        case str():
            request.depends_on.append(dependency)
        case bool():  # an int to Python, never meant as an index
            raise TypeError(f"depends_on takes task ids, handles or specs, not {dependency!r}")
        case int() | TaskSpec() if not batch:
            raise TypeError(
                "depends_on names an index or a TaskSpec, which only submit_batch "
                "resolves (to a spec of the same batch); give a task id or a handle"
            )
        case int():
            request.depends_on_requests.append(dependency)
        case TaskSpec():
            request.depends_on_requests.append(_position(dependency, batch))
        case _:
            request.depends_on.append(dependency.id)


def _position(spec: TaskSpec, batch: Sequence[TaskSpec]) -> int:
    """The index of this very spec object in the batch (equal specs are distinct tasks)."""
    found = [index for index, candidate in enumerate(batch) if candidate is spec]
    if len(found) != 1:
        where = "is not in" if not found else "appears more than once in"
        raise ValueError(
            f"depends_on names a TaskSpec of type {spec.type!r} that {where} this batch; "
            "name the spec by its index instead"
        )
    return found[0]
