"""Task type limits and pause through the API, on every store: declared with
the handler, changed by UpdateTaskType, PauseTaskType and ResumeTaskType,
shown by ListTaskTypes, and held by a running server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server import HandlerRegistry, TaskContext
from tests.support.procs import wait_until
from tests.support.raw_api import Api, violations
from tests.support.server import ServerThread, test_config

registry = HandlerRegistry()
release = threading.Event()
# How many `held` handlers run now, and the most that ever ran at once.
running_now = [0, 0]
_count_lock = threading.Lock()


@registry.task("held", max_running=2, max_starts_per_second=50, burst=5)
def held(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Runs until the test releases it."""
    with _count_lock:
        running_now[0] += 1
        running_now[1] = max(running_now)
    try:
        while not release.wait(0.01) and not ctx.cancelled:
            pass
    finally:
        with _count_lock:
            running_now[0] -= 1
    return "released"


@pytest.fixture
def api(store_url: str) -> Iterator[Api]:
    release.clear()
    running_now[:] = [0, 0]
    thread = ServerThread(test_config(store=store_url), registry).start()
    client = Api(thread.address)
    yield client
    release.set()
    client.close()
    thread.stop()


def limits(message: pb.TaskTypeLimits) -> dict[str, float]:
    return {field.name: value for field, value in message.ListFields()}


def test_declared_limits_hold_across_the_server(api: Api) -> None:
    tasks = [api.submit("held") for _ in range(5)]

    def two_run() -> bool:
        states = [api.get(task.id).state for task in tasks]
        return states.count(task_pb2.TASK_STATE_RUNNING) == 2

    wait_until(two_run, 10, "two held tasks to run")
    listed = api.task_types()["held"]
    assert (listed.running, listed.pending) == (2, 3)
    assert limits(listed.default_limits) == {
        "max_running": 2,
        "max_starts_per_second": 50,
        "burst": 5,
    }
    assert limits(listed.limits) == limits(listed.default_limits)
    assert listed.description == "Runs until the test releases it."
    waiting = [t for t in tasks if api.get(t.id).state == task_pb2.TASK_STATE_PENDING]
    assert api.get(waiting[0].id).pending_reason == task_pb2.PENDING_REASON_CONCURRENCY_LIMIT
    release.set()
    for task in tasks:
        assert api.wait(task.id).state == task_pb2.TASK_STATE_SUCCEEDED
    assert running_now[1] == 2


def test_limits_changed_at_run_time_override_the_declared_ones_until_restored(api: Api) -> None:
    changed = api.update_type(
        "held", ["max_running", "max_running_per_key"], max_running=3, max_running_per_key=1
    )
    assert limits(changed.limits) == {
        "max_running": 3,
        "max_running_per_key": 1,
        "max_starts_per_second": 50,
        "burst": 5,
    }
    assert limits(changed.default_limits)["max_running"] == 2
    tasks = [api.submit("held", concurrency_key=f"k{i}") for i in range(4)]

    def three_run() -> bool:
        states = [api.get(task.id).state for task in tasks]
        return states.count(task_pb2.TASK_STATE_RUNNING) == 3

    wait_until(three_run, 10, "three held tasks to run")
    restored = api.update_type("held", ["max_running"], restore=True)
    assert limits(restored.limits)["max_running"] == 2
    assert limits(restored.limits)["max_running_per_key"] == 1
    assert api.task_types()["held"].limits == restored.limits
    # No mask: all four, here back to the handler's.
    everything = api.update_type("held", restore=True)
    assert everything.limits == everything.default_limits
    release.set()


def test_a_type_paused_before_anything_serves_it_is_listed(api: Api) -> None:
    paused = api.pause_type("reports.monthly")
    assert (paused.name, paused.paused, paused.workers) == ("reports.monthly", True, 0)
    assert api.task_types()["reports.monthly"].paused
    held = api.pause_type("held")
    assert held.paused and held.workers == 1
    task = api.submit("held")
    assert api.get(task.id).pending_reason == task_pb2.PENDING_REASON_TYPE_PAUSED
    assert api.task_types()["held"].pending == 1
    assert not api.resume_type("held").paused
    api.wait(task.id, states={task_pb2.TASK_STATE_RUNNING})


@pytest.mark.parametrize(
    ("request_fields", "field", "problem"),
    [
        ({"name": ""}, "name", "is required: name a task type"),
        ({"name": "no spaces"}, "name", "must start with a letter or underscore"),
        (
            {"name": "held", "update_mask": {"paths": ["max_running", "speed"]}},
            "update_mask.paths[1]",
            "'speed' is no limit; name some of max_running, max_running_per_key, "
            "max_starts_per_second, burst",
        ),
        (
            {
                "name": "held",
                "limits": {"max_running": -1},
                "update_mask": {"paths": ["max_running"]},
            },
            "limits.max_running",
            "must be between 0 (no limit) and 1,000,000, got -1",
        ),
        (
            {
                "name": "held",
                "limits": {"max_starts_per_second": float("inf")},
                "update_mask": {"paths": ["max_starts_per_second"]},
            },
            "limits.max_starts_per_second",
            "must be a finite number, got inf",
        ),
    ],
)
def test_a_bad_update_is_refused_naming_the_field(
    api: Api, request_fields: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.UpdateTaskType(pb.UpdateTaskTypeRequest(**request_fields), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    [(named, description)] = violations(caught.value)
    assert named == field
    assert description.startswith(problem)


def test_pause_and_resume_need_a_type_name(api: Api) -> None:
    for call in (api.pause_type, api.resume_type):
        with pytest.raises(grpc.RpcError) as caught:
            call("")
        assert violations(caught.value) == [("name", "is required: name a task type")]


def test_limits_a_handler_declares_are_checked_when_it_registers() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError, match=r"max_running must be between 0 \(no limit\)"):
        registry.register("bad", held, max_running=-2)
    with pytest.raises(ValueError, match=r"burst must be a whole number, got 2\.5"):
        registry.register("bad", held, burst=2.5)  # type: ignore[arg-type]
    assert "bad" not in registry
