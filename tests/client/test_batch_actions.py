"""Batch cancel and batch retry: how the SDK names the tasks, then both
clients against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import BatchCancelResult, Client, TaskSpec, TaskState, _batch_actions
from conveyor.v1 import task_pb2, task_service_pb2

# --- requests, without a server ---------------------------------------------------------


def _cancel_request(ids: Any = None, **filters: Any) -> task_service_pb2.BatchCancelTasksRequest:
    request = task_service_pb2.BatchCancelTasksRequest()
    arguments = {
        "states": None,
        "type": None,
        "labels": None,
        "created_after": None,
        "created_before": None,
        **filters,
    }
    assert _batch_actions.select(request, ids, **arguments)
    return request


def test_ids_may_be_handles_or_tasks() -> None:
    class Handle:
        id = "t-2"

    request = _cancel_request(["t-1", Handle()])
    assert list(request.ids) == ["t-1", "t-2"]
    assert not request.HasField("filter")


def test_a_filter_names_what_list_filters() -> None:
    since = datetime(2026, 1, 31, tzinfo=UTC)
    request = _cancel_request(
        states=[TaskState.FAILED],
        type="email",
        labels={"team": "a"},
        created_after=since,
        created_before=since + timedelta(days=1),
    )
    assert list(request.filter.states) == [task_pb2.TASK_STATE_FAILED]
    assert (request.filter.type, dict(request.filter.labels)) == ("email", {"team": "a"})
    assert request.filter.created_after.ToDatetime(tzinfo=UTC) == since
    assert request.filter.created_before.ToDatetime(tzinfo=UTC) == since + timedelta(days=1)
    assert not request.ids


def test_ids_and_a_filter_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        _cancel_request(["t-1"], type="email")


def test_nothing_named_is_refused_rather_than_matching_every_task() -> None:
    with pytest.raises(ValueError, match="at least one filter"):
        _cancel_request()


def test_no_ids_make_no_call() -> None:
    flow = _batch_actions.batch_cancel([], None, None, None, None, None, None)
    with pytest.raises(StopIteration) as stopped:
        next(flow)
    result = stopped.value.value
    assert isinstance(result, BatchCancelResult)
    assert (result.matched, result.cancelled, result.cancel_requested) == (0, 0, 0)


# --- both clients against a real server -------------------------------------------------


def test_batch_cancel_by_ids_counts_each_outcome(each_client: Client) -> None:
    waiting = each_client.submit("echo", delay=60)
    running = each_client.submit("wait_for_cancel")
    for task in each_client.watch(running.id):
        if task.state is TaskState.RUNNING:
            break
    result = each_client.batch_cancel([waiting, running.id, "no-such-task"])
    assert (result.matched, result.cancelled, result.cancel_requested, result.not_found) == (
        2,
        1,
        1,
        1,
    )
    assert each_client.wait(running.id, timeout=10).state is TaskState.CANCELLED


def test_batch_cancel_and_retry_by_filter(each_client: Client, run_label: dict[str, str]) -> None:
    handles = each_client.submit_batch([TaskSpec("echo", labels=run_label, delay=60)] * 3)
    other = each_client.submit("echo", labels={**run_label, "keep": "yes"}, delay=60)
    cancelled = each_client.batch_cancel(labels=run_label, created_before=other.task.create_time)
    assert (cancelled.matched, cancelled.cancelled) == (3, 3)
    assert each_client.get(other.id).state is TaskState.PENDING

    retried = each_client.batch_retry(labels=run_label, states=[TaskState.CANCELLED])
    assert (retried.matched, retried.retried, retried.not_found) == (3, 3, 0)
    # Queued again with fresh attempts, and due at once: they run.
    done = each_client.wait_all(handles, timeout=10)
    assert {task.state for task in done} == {TaskState.SUCCEEDED}
    each_client.cancel(other.id)


def test_batch_retry_by_ids_leaves_unfinished_tasks_alone(each_client: Client) -> None:
    failed = each_client.submit("fail", {"message": "boom"}, max_attempts=1)
    each_client.wait(failed.id, timeout=10)
    waiting = each_client.submit("echo", delay=60)
    result = each_client.batch_retry([failed, waiting])
    assert (result.matched, result.retried) == (2, 1)
    assert each_client.get(waiting.id).state is TaskState.PENDING
    each_client.cancel(waiting.id)


def test_a_filter_that_matches_nothing_counts_nothing(each_client: Client) -> None:
    result = each_client.batch_cancel(labels={"run": "nobody-uses-this"})
    assert (result.matched, result.cancelled, result.not_found) == (0, 0, 0)
