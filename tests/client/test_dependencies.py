"""Dependencies, concurrency keys, why a task waits and the creation-time
filters: the requests the SDK builds, then both clients against a real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import Client, InvalidArgument, PendingReason, TaskSpec, TaskState, _core
from conveyor._coalesce import QueuedSubmit
from conveyor.v1 import task_pb2

# --- requests and converters, without a server -----------------------------------------


class _Named:
    """Anything with an id names a task, as handles do."""

    def __init__(self, id: str) -> None:
        self.id = id


def test_submit_request_carries_key_ids_and_the_failure_rule() -> None:
    task = _core.task_from_proto(task_pb2.Task(id="t-task", state=task_pb2.TASK_STATE_PENDING))
    spec = TaskSpec(
        "echo",
        concurrency_key="acct-7",
        depends_on=["t-id", _Named("t-handle"), task],
        run_on_dependency_failure=True,
    )
    request = _core.submit_request(spec)
    assert request.concurrency_key == "acct-7"
    assert list(request.depends_on) == ["t-id", "t-handle", "t-task"]
    assert list(request.depends_on_requests) == []
    assert request.run_on_dependency_failure


def test_submit_request_defaults_leave_the_new_fields_unset() -> None:
    request = _core.submit_request(TaskSpec("echo"))
    assert request.concurrency_key == ""
    assert not request.depends_on
    assert not request.depends_on_requests
    assert not request.run_on_dependency_failure


@pytest.mark.parametrize("dependency", [0, TaskSpec("echo")])
def test_a_lone_submit_refuses_batch_references(dependency: Any) -> None:
    with pytest.raises(TypeError, match="only submit_batch"):
        _core.submit_request(TaskSpec("echo", depends_on=[dependency]))


def test_a_coalesced_submit_carries_only_ids() -> None:
    queued = QueuedSubmit(TaskSpec("echo", depends_on=["t-1"]), None, 10.0, time.monotonic())
    assert list(queued.request.depends_on) == ["t-1"]
    assert not queued.request.depends_on_requests
    with pytest.raises(TypeError, match="only submit_batch"):
        QueuedSubmit(TaskSpec("echo", depends_on=[0]), None, 10.0, time.monotonic())


def test_batch_request_resolves_specs_and_indexes_to_earlier_requests() -> None:
    extract = TaskSpec("extract")
    clean = TaskSpec("clean", depends_on=[extract])
    report = TaskSpec("report", depends_on=[0, clean, "t-outside"])
    request = _core.batch_request([extract, clean, report])
    assert [list(r.depends_on_requests) for r in request.requests] == [[], [0], [0, 1]]
    assert list(request.requests[2].depends_on) == ["t-outside"]


def test_equal_specs_are_told_apart_by_identity() -> None:
    first, second = TaskSpec("echo"), TaskSpec("echo")
    assert first == second
    request = _core.batch_request([first, second, TaskSpec("echo", depends_on=[second])])
    assert list(request.requests[2].depends_on_requests) == [1]


def test_a_spec_outside_the_batch_or_repeated_in_it_is_refused() -> None:
    stranger, repeated = TaskSpec("echo"), TaskSpec("echo")
    with pytest.raises(ValueError, match="is not in this batch"):
        _core.batch_request([TaskSpec("echo", depends_on=[stranger])])
    with pytest.raises(ValueError, match="appears more than once"):
        _core.batch_request([repeated, repeated, TaskSpec("echo", depends_on=[repeated])])


def test_a_string_is_not_a_list_of_ids() -> None:
    with pytest.raises(TypeError, match="not the string 't-1'"):
        _core.submit_request(TaskSpec("echo", depends_on="t-1"))


def test_a_bool_is_not_an_index() -> None:
    with pytest.raises(TypeError, match="not True"):
        _core.batch_request([TaskSpec("echo"), TaskSpec("echo", depends_on=[True])])


def test_task_from_proto_reads_the_new_fields() -> None:
    message = task_pb2.Task(
        id="t-1",
        state=task_pb2.TASK_STATE_PENDING,
        concurrency_key="acct-7",
        depends_on=["t-0"],
        run_on_dependency_failure=True,
        pending_reason=task_pb2.PENDING_REASON_KEY_CONCURRENCY_LIMIT,
        pending_message="key acct-7 allows 1 running task and 1 is running",
    )
    task = _core.task_from_proto(message)
    assert task.concurrency_key == "acct-7"
    assert task.depends_on == ("t-0",)
    assert task.run_on_dependency_failure
    assert task.pending_reason is PendingReason.KEY_CONCURRENCY_LIMIT
    assert task.pending_message.startswith("key acct-7")


@pytest.mark.parametrize("value", [task_pb2.PENDING_REASON_UNSPECIFIED, 999])
def test_no_reason_and_a_reason_newer_than_the_sdk_read_as_none(value: int) -> None:
    message = task_pb2.Task(id="t-1", state=task_pb2.TASK_STATE_RUNNING, pending_reason=value)  # type: ignore[arg-type]
    task = _core.task_from_proto(message)
    assert task.pending_reason is None
    assert task.concurrency_key is None


def test_every_pending_reason_has_its_proto_number() -> None:
    for reason in PendingReason:
        assert task_pb2.PendingReason.Name(reason.value) == f"PENDING_REASON_{reason.name}"
    assert len(PendingReason) == len(task_pb2.PendingReason.keys()) - 1


def test_list_request_carries_the_creation_bounds() -> None:
    after = datetime(2026, 1, 31, 8, tzinfo=UTC)
    request = _core.list_request(
        states=None,
        type=None,
        labels=None,
        page_size=10,
        created_after=after,
        created_before=after + timedelta(days=1),
    )
    assert request.created_after.ToDatetime(tzinfo=UTC) == after
    assert request.created_before.ToDatetime(tzinfo=UTC) == after + timedelta(days=1)
    assert not _core.list_request(states=None, type=None, labels=None, page_size=10).HasField(
        "created_after"
    )


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="created_before must be timezone-aware"):
        _core.list_request(
            states=None, type=None, labels=None, page_size=10, created_before=datetime.now()
        )


# --- both clients against a real server -------------------------------------------------


def test_submit_carries_the_key_and_the_dependencies(each_client: Client) -> None:
    parent = each_client.submit("echo", {"step": 1})
    child = each_client.submit(
        "echo",
        {"step": 2},
        concurrency_key="acct-7",
        depends_on=[parent],
        run_on_dependency_failure=True,
    )
    assert child.task.concurrency_key == "acct-7"
    assert child.task.depends_on == (parent.id,)
    assert child.task.run_on_dependency_failure
    assert each_client.wait(child.id, timeout=10).state is TaskState.SUCCEEDED


def test_submit_batch_chains_specs_of_the_batch(each_client: Client) -> None:
    extract = TaskSpec("echo", {"step": "extract"})
    clean = TaskSpec("echo", {"step": "clean"}, depends_on=[extract])
    report = TaskSpec("echo", {"step": "report"}, depends_on=[0, clean])
    first, second, third = each_client.submit_batch([extract, clean, report])
    assert second.task.depends_on == (first.id,)
    assert third.task.depends_on == (first.id, second.id)
    done = each_client.wait_all([first, second, third], timeout=10)
    assert [task.state for task in done] == [TaskState.SUCCEEDED] * 3
    assert done[0].end_time is not None and done[2].start_time is not None
    assert done[2].start_time >= done[0].end_time


def test_a_forward_index_is_refused_by_the_service(each_client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        each_client.submit_batch([TaskSpec("echo", depends_on=[1]), TaskSpec("echo")])
    assert any("depends_on_requests" in field for field, _ in caught.value.field_violations)


def test_an_unknown_dependency_is_refused(each_client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        each_client.submit("echo", depends_on=["no-such-task"])
    assert any("depends_on" in field for field, _ in caught.value.field_violations)


def test_get_says_why_a_task_waits(each_client: Client) -> None:
    parent = each_client.submit("echo", delay=60)
    child = each_client.submit("echo", depends_on=[parent.id])
    waiting = each_client.get(child.id)
    assert waiting.pending_reason is PendingReason.DEPENDENCIES
    assert waiting.pending_message
    delayed = each_client.get(parent.id)
    assert delayed.pending_reason is PendingReason.DELAYED
    each_client.cancel(parent.id)
    final = each_client.wait(child.id, timeout=10)
    assert final.state is TaskState.CANCELLED
    assert final.error is not None
    assert final.error.code == "DEPENDENCY_FAILED"
    assert final.pending_reason is None


def test_coalesced_submits_carry_their_dependencies(server: Any) -> None:
    with Client(server.address, timeout=5.0) as client, ThreadPoolExecutor(8) as pool:
        parent = client.submit("echo", delay=60)
        children = list(
            pool.map(lambda i: client.submit("echo", {"i": i}, depends_on=[parent]), range(40))
        )
        assert {child.task.depends_on for child in children} == {(parent.id,)}
        result = client.batch_cancel([parent, *children])
        assert result.matched == 41


def test_list_filters_by_creation_time(each_client: Client, run_label: dict[str, str]) -> None:
    early = each_client.submit("echo", labels=run_label)
    between = datetime.now(UTC)
    late = each_client.submit("echo", labels=run_label)
    after = [task.id for task in each_client.list(labels=run_label, created_after=between)]
    before = [task.id for task in each_client.list(labels=run_label, created_before=between)]
    assert (after, before) == ([late.id], [early.id])
