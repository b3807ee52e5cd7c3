"""Why a PENDING task waits, as GetTask tells it (Task.pending_reason and
pending_message), for each reason the API can bring about, on every store."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from tests.support.procs import wait_until
from tests.support.raw_api import Api
from tests.support.server import ServerThread

Make = Callable[..., tuple[ServerThread, Api]]


@pytest.fixture
def make(store_url: str, make_api: Make) -> Make:
    """A server of its own on each store, with these settings."""
    return lambda **overrides: make_api(store=store_url, **overrides)


def running(api: Api, task_id: str) -> None:
    api.wait(task_id, states={task_pb2.TASK_STATE_RUNNING})


def reason(api: Api, task_id: str) -> tuple[str, str]:
    task = api.get(task_id)
    return task_pb2.PendingReason.Name(task.pending_reason), task.pending_message


def test_a_task_waiting_for_another_names_it(make: Make) -> None:
    _, api = make()
    parent = api.submit("wait_for_cancel", {"seconds": 30})
    running(api, parent.id)
    child = api.submit("echo", depends_on=[parent.id])
    assert reason(api, child.id) == (
        "PENDING_REASON_DEPENDENCIES",
        f"waiting for 1 of the 1 task it depends on to finish: {parent.id} (RUNNING)",
    )
    # Other reads leave the reason out.
    listed = api.stub.ListTasks(pb.ListTasksRequest(type="echo"), timeout=10).tasks
    assert [task.pending_reason for task in listed] == [task_pb2.PENDING_REASON_UNSPECIFIED]
    api.stub.CancelTask(pb.CancelTaskRequest(id=parent.id), timeout=10)
    assert api.wait(child.id).error.code == "DEPENDENCY_FAILED"
    assert api.get(child.id).pending_reason == task_pb2.PENDING_REASON_UNSPECIFIED


def test_a_delayed_task_says_until_when(make: Make) -> None:
    _, api = make()
    task = api.submit("echo", delay={"seconds": 600})
    name, message = reason(api, task.id)
    assert name == "PENDING_REASON_DELAYED"
    assert message.startswith("delayed until 20") and message.endswith(" s)")


def test_a_task_backing_off_after_a_failed_attempt_says_so(make: Make) -> None:
    _, api = make(retry_backoff_seconds=600, retry_backoff_max_seconds=600)
    task = api.submit("flaky", {"succeed_on": 3}, max_attempts=3)
    # Attempt 1 while it runs too: waiting for its backoff is PENDING with an error.
    wait_until(
        lambda: (
            (got := api.get(task.id)).state == task_pb2.TASK_STATE_PENDING and got.HasField("error")
        ),
        10,
        "the first attempt to fail",
    )
    name, message = reason(api, task.id)
    assert name == "PENDING_REASON_BACKING_OFF"
    assert message.startswith("backing off after attempt 1 of 3 failed (HANDLER_ERROR); ")


def test_a_task_of_a_paused_type_says_so_and_runs_once_resumed(make: Make) -> None:
    _, api = make()
    api.pause_type("echo")
    task = api.submit("echo", {"n": 1})
    assert reason(api, task.id) == ("PENDING_REASON_TYPE_PAUSED", "task type echo is paused")
    api.resume_type("echo")
    assert api.wait(task.id).state == task_pb2.TASK_STATE_SUCCEEDED


def test_a_task_over_its_types_limit_says_how_many_run(make: Make) -> None:
    _, api = make()
    api.update_type("wait_for_cancel", ["max_running"], max_running=1)
    first = api.submit("wait_for_cancel", {"seconds": 30})
    running(api, first.id)
    second = api.submit("wait_for_cancel", {"seconds": 30})
    assert reason(api, second.id) == (
        "PENDING_REASON_CONCURRENCY_LIMIT",
        "task type wait_for_cancel allows 1 running tasks and 1 are running",
    )
    api.stub.CancelTask(pb.CancelTaskRequest(id=first.id), timeout=10)
    running(api, second.id)
    api.stub.CancelTask(pb.CancelTaskRequest(id=second.id), timeout=10)


def test_a_task_over_its_keys_limit_says_so(make: Make) -> None:
    _, api = make()
    api.update_type("wait_for_cancel", ["max_running_per_key"], max_running_per_key=1)
    first = api.submit("wait_for_cancel", {"seconds": 30}, concurrency_key="acme")
    running(api, first.id)
    second = api.submit("wait_for_cancel", {"seconds": 30}, concurrency_key="acme")
    other = api.submit("wait_for_cancel", {"seconds": 30}, concurrency_key="globex")
    running(api, other.id)
    assert reason(api, second.id) == (
        "PENDING_REASON_KEY_CONCURRENCY_LIMIT",
        "concurrency key acme of task type wait_for_cancel allows 1 running tasks and 1 are "
        "running",
    )
    api.batch_cancel(ids=[first.id, second.id, other.id])


def test_a_due_task_behind_busy_workers_is_queued(make: Make) -> None:
    _, api = make(workers=1)
    busy = api.submit("wait_for_cancel", {"seconds": 30})
    running(api, busy.id)
    queued = api.submit("echo")
    name, message = reason(api, queued.id)
    assert name == "PENDING_REASON_QUEUED"
    assert "type echo" in message
    api.stub.CancelTask(pb.CancelTaskRequest(id=busy.id), timeout=10)
    api.wait(queued.id)


@pytest.mark.stores("redis")
def test_a_task_no_worker_serves_says_so(make: Make) -> None:
    # An API replica that runs no tasks itself, with no worker beside it.
    _, api = make(workers=0)
    task = api.submit("echo")
    assert reason(api, task.id) == (
        "PENDING_REASON_NO_WORKER",
        "no live worker serves task type 'echo'; start a worker with its handler, and the "
        "task runs",
    )
