"""Running tasks: retries, backoff, timeouts, cancel, retry, priority, delay, retention."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server.stores import StoreUnavailable
from tests.support.raw_api import Api

PENDING, RUNNING = task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING
SUCCEEDED, FAILED, CANCELLED = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)


def test_failure_without_retries_fails_with_error(api: Api) -> None:
    done = api.wait(api.submit("fail", {"message": "disk full"}).id)
    assert done.state == FAILED
    assert done.error.code == "HANDLER_ERROR"
    assert done.error.message == "disk full"
    assert done.error.exception_type == "RuntimeError"
    assert done.attempt == 1


def test_retries_until_success(api: Api) -> None:
    done = api.wait(api.submit("flaky", {"succeed_on": 3}, max_attempts=5).id)
    assert done.state == SUCCEEDED
    assert done.attempt == 3
    assert done.result.struct_value["attempt"] == 3
    assert not done.HasField("error")


def test_retries_stop_at_max_attempts(api: Api) -> None:
    done = api.wait(api.submit("fail", {}, max_attempts=3).id)
    assert done.state == FAILED
    assert done.attempt == 3


def test_non_retryable_error_fails_at_once(api: Api) -> None:
    done = api.wait(api.submit("fail_permanently", {"message": "bad card"}, max_attempts=5).id)
    assert done.state == FAILED
    assert done.attempt == 1
    assert done.error.code == "NON_RETRYABLE"
    assert done.error.message == "bad card"


def test_backoff_delays_the_retry(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(retry_backoff_seconds=0.4, retry_backoff_max_seconds=0.4)
    task = api.submit("flaky", {"succeed_on": 2}, max_attempts=2)
    deadline = time.monotonic() + 5
    while True:
        current = api.get(task.id)
        if current.attempt == 1 and current.state == PENDING:
            waiting = current
            break
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert waiting.error.code == "HANDLER_ERROR"  # the last error stays visible
    gap = waiting.scheduled_time.ToNanoseconds() - waiting.update_time.ToNanoseconds()
    assert 0.2e9 <= gap <= 0.4e9  # equal jitter: between half and all of the backoff
    done = api.wait(task.id)
    assert done.state == SUCCEEDED
    assert done.start_time.ToNanoseconds() >= waiting.scheduled_time.ToNanoseconds()


def test_result_that_is_not_json_fails(api: Api) -> None:
    done = api.wait(api.submit("not_json", {}).id)
    assert done.state == FAILED
    assert done.error.code == "INVALID_RESULT"
    assert "set" in done.error.message


def test_timeout_stops_the_handler_and_fails(api: Api) -> None:
    task = api.submit(
        "wait_for_cancel", {"seconds": 20}, timeout=duration_pb2.Duration(nanos=200_000_000)
    )
    started = time.monotonic()
    done = api.wait(task.id)
    assert done.state == FAILED
    assert done.error.code == "TIMEOUT"
    assert "timeout" in done.error.message
    assert time.monotonic() - started < 5


def test_timeout_of_a_handler_that_ignores_it(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(stop_grace_seconds=0.2)
    task = api.submit(
        "ignore_cancel", {"seconds": 3}, timeout=duration_pb2.Duration(nanos=100_000_000)
    )
    started = time.monotonic()
    done = api.wait(task.id)
    assert done.error.code == "TIMEOUT"
    assert time.monotonic() - started < 2


def test_timeout_is_retried_while_attempts_remain(api: Api) -> None:
    task = api.submit(
        "wait_for_cancel",
        {"seconds": 20},
        max_attempts=2,
        timeout=duration_pb2.Duration(nanos=100_000_000),
    )
    done = api.wait(task.id)
    assert (done.state, done.attempt, done.error.code) == (FAILED, 2, "TIMEOUT")


def test_cancel_pending_is_immediate(api: Api) -> None:
    task = api.submit("echo", {}, delay=duration_pb2.Duration(seconds=60))
    cancelled = api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10).task
    assert cancelled.state == CANCELLED
    assert cancelled.end_time.seconds > 0
    # Idempotent: cancelling again is OK and changes nothing.
    again = api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10).task
    assert again.state == CANCELLED and again.version == cancelled.version


def test_cancel_running_asks_the_handler_to_stop(api: Api) -> None:
    task = api.submit("wait_for_cancel", {"seconds": 30}, max_attempts=3)
    api.wait(task.id, states={RUNNING})
    response = api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10).task
    assert response.state == RUNNING and response.cancel_requested
    done = api.wait(task.id, timeout=5)
    assert done.state == CANCELLED
    assert done.attempt == 1  # never retried, though attempts remain
    time.sleep(0.1)
    assert api.get(task.id).state == CANCELLED


@pytest.mark.parametrize(
    ("how", "state", "code"), [("cancel", CANCELLED, ""), ("timeout", FAILED, "TIMEOUT")]
)
def test_handler_that_raises_when_asked_to_stop(api: Api, how: str, state: int, code: str) -> None:
    timeout = duration_pb2.Duration(nanos=200_000_000) if how == "timeout" else None
    task = api.submit("cooperative", {}, max_attempts=3 if how == "cancel" else 1, timeout=timeout)
    api.wait(task.id, states={RUNNING})
    if how == "cancel":
        api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
    done = api.wait(task.id, timeout=5)
    assert done.state == state
    assert done.error.code == code
    assert done.attempt == 1


def test_cancel_of_a_handler_that_ignores_it(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(stop_grace_seconds=0.2)
    task = api.submit("ignore_cancel", {"seconds": 3})
    api.wait(task.id, states={RUNNING})
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
    assert api.wait(task.id, timeout=2).state == CANCELLED


def test_cancel_finished_is_failed_precondition(api: Api) -> None:
    done = api.wait(api.submit("echo", {}).id)
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.CancelTask(pb.CancelTaskRequest(id=done.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "SUCCEEDED" in caught.value.details()


def test_retry_reruns_a_failed_task(api: Api) -> None:
    failed = api.wait(api.submit("fail", {}, max_attempts=2).id)
    assert failed.state == FAILED
    retried = api.stub.RetryTask(pb.RetryTaskRequest(id=failed.id), timeout=10).task
    assert retried.id == failed.id
    assert retried.state == PENDING
    assert retried.attempt == 0
    assert retried.version > failed.version
    done = api.wait(failed.id)
    assert done.state == FAILED and done.attempt == 2


def test_retry_reruns_a_cancelled_task(api: Api) -> None:
    task = api.submit("echo", {"v": 1}, delay=duration_pb2.Duration(seconds=60))
    api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)
    api.stub.RetryTask(pb.RetryTaskRequest(id=task.id), timeout=10)
    done = api.wait(task.id)
    assert done.state == SUCCEEDED


@pytest.mark.parametrize("state", ["pending", "running", "succeeded"])
def test_retry_of_unfinished_or_succeeded_is_failed_precondition(api: Api, state: str) -> None:
    if state == "pending":
        task = api.submit("echo", {}, delay=duration_pb2.Duration(seconds=60))
    elif state == "running":
        task = api.submit("wait_for_cancel", {"seconds": 30})
        api.wait(task.id, states={RUNNING})
    else:
        task = api.wait(api.submit("echo", {}).id)
    with pytest.raises(grpc.RpcError) as caught:
        api.stub.RetryTask(pb.RetryTaskRequest(id=task.id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    if state != "succeeded":
        api.stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=10)


def test_priority_then_age(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(workers=1)
    blocker = api.submit("wait_for_cancel", {"seconds": 30})
    api.wait(blocker.id, states={RUNNING})
    low = api.submit("echo", {}, priority=-5)
    first_normal = api.submit("echo", {})
    second_normal = api.submit("echo", {})
    high = api.submit("echo", {}, priority=10)
    api.stub.CancelTask(pb.CancelTaskRequest(id=blocker.id), timeout=10)
    done = [api.wait(t.id) for t in (low, first_normal, second_normal, high)]
    order = sorted(done, key=lambda t: t.start_time.ToNanoseconds())
    assert [t.id for t in order] == [high.id, first_normal.id, second_normal.id, low.id]


def test_delayed_start(api: Api) -> None:
    task = api.submit("echo", {}, delay=duration_pb2.Duration(nanos=300_000_000))
    time.sleep(0.1)
    assert api.get(task.id).state == PENDING
    done = api.wait(task.id)
    assert done.state == SUCCEEDED
    assert done.start_time.ToNanoseconds() >= task.scheduled_time.ToNanoseconds()


def test_retention_count_bounds_finished_tasks(make_api) -> None:  # type: ignore[no-untyped-def]
    server, api = make_api(retention_count=5)
    tasks = [api.submit("echo", {"i": i}) for i in range(12)]
    for task in tasks[-5:]:
        api.wait(task.id)
    deadline = time.monotonic() + 5
    while server.server.store.size > 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as caught:
        api.get(tasks[0].id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_retention_period_drops_old_finished_tasks(make_api) -> None:  # type: ignore[no-untyped-def]
    server, api = make_api(retention_seconds=0.2)
    task = api.wait(api.submit("echo", {}).id)
    deadline = time.monotonic() + 5
    while server.server.store.size:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as caught:
        api.get(task.id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.server.store.size == 0


def test_idempotency_key_is_freed_with_the_task(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(retention_count=1)
    first = api.wait(api.submit("echo", {"v": 1}, idempotency_key="k1").id)
    api.wait(api.submit("echo", {}).id)
    # k1's task was dropped; the key is free for a new request.
    second = api.submit("echo", {"v": 2}, idempotency_key="k1")
    assert second.id != first.id


def test_outcomes_survive_a_store_error(make_api) -> None:  # type: ignore[no-untyped-def]
    """A store refusal while recording how tasks ended is retried, not lost."""
    server, api = make_api()
    store = server.server.store
    original = store.complete
    failures = {"left": 1}

    async def flaky_complete(outcomes, now):  # type: ignore[no-untyped-def]
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailable("store briefly unreachable")
        return await original(outcomes, now)

    store.complete = flaky_complete
    done = api.wait(api.submit("echo", {"x": 1}).id, timeout=10)
    assert done.state == SUCCEEDED
    assert failures["left"] == 0


def test_result_over_the_cap_fails_without_a_retry(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(max_result_bytes=1000)
    small = api.wait(api.submit("echo", {"blob": "x" * 900}).id)
    assert small.state == task_pb2.TASK_STATE_SUCCEEDED
    task = api.wait(api.submit("echo", {"blob": "x" * 2000}, max_attempts=3).id)
    assert task.state == task_pb2.TASK_STATE_FAILED
    assert task.error.code == "INVALID_RESULT"
    assert "limit is 1000 bytes" in task.error.message
    assert task.attempt == 1
    assert not task.HasField("result")


@pytest.mark.slow  # a store down for 2.5 s
def test_a_store_outage_is_logged_once_without_a_traceback(
    make_api,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that stays down is an operational state, not a bug: one
    warning when it goes, one line when it is back, not a traceback a second."""
    server, api = make_api()
    store = server.server.store
    original = store.claim
    down = {"until": time.monotonic() + 2.5}

    async def unreachable_claim(limit, now, types):  # type: ignore[no-untyped-def]
        if time.monotonic() < down["until"]:
            raise StoreUnavailable("Redis at example:6379 is unavailable: connection refused")
        return await original(limit, now, types)

    store.claim = unreachable_claim
    with caplog.at_level(logging.INFO, logger="conveyor_server._runner"):
        done = api.wait(api.submit("echo", {"x": 1}).id, timeout=15)
    assert done.state == SUCCEEDED
    records = [r for r in caplog.records if r.name == "conveyor_server._runner"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "connection refused" in warnings[0].getMessage()
    assert all(r.exc_info is None for r in records)
    assert any("reachable again" in r.getMessage() for r in records)
