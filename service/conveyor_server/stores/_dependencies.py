"""Dependencies between tasks, as a store of one process (memory, SQLite)
keeps them: per unfinished task, the tasks waiting for it to end; and the
rule of what a dependency's end means for them."""

from __future__ import annotations

from conveyor_server.stores._records import ErrorCode, State, TaskFailure, TaskRecord


def dependency_failure(dependency: TaskRecord, runs_anyway: bool) -> TaskFailure | None:
    """What the end of `dependency` means for a task waiting for it: None
    when it counts as done (it SUCCEEDED, or the waiting task runs on a
    dependency's failure), else the failure that cancels the waiting task."""
    if dependency.state is State.SUCCEEDED or runs_anyway:
        return None
    return TaskFailure(
        ErrorCode.DEPENDENCY_FAILED,
        f"task {dependency.id} it depends on ended {dependency.state.name}",
    )


# Per unfinished task id, the tasks waiting for it to end: edges are added
# when a waiting task is created (or loaded) and taken when its dependency
# ends.
Dependents = dict[str, list[TaskRecord]]


def wait_for(
    edges: Dependents, dependent: TaskRecord, dependencies: list[TaskRecord]
) -> TaskFailure | None:
    """Make `dependent` wait for those of `dependencies` that have not
    ended, setting its `waiting`; those that have count at once. Returns
    the failure that cancels it instead (it then waits for nothing)."""
    unfinished: list[TaskRecord] = []
    for dependency in dependencies:
        if not dependency.state.is_terminal:
            unfinished.append(dependency)
            continue
        failure = dependency_failure(dependency, dependent.run_on_dependency_failure)
        if failure is not None:
            return failure
    for dependency in unfinished:
        edges.setdefault(dependency.id, []).append(dependent)
    dependent.waiting = len(unfinished)
    return None


def take_waiting(edges: Dependents, dependency: TaskRecord) -> list[TaskRecord]:
    """The tasks still waiting for `dependency`, which just ended (a task
    cancelled or retried since is skipped)."""
    return [
        dependent
        for dependent in edges.pop(dependency.id, ())
        if dependent.state is State.PENDING and dependent.waiting
    ]
