"""Every kind of bad input gets the right code and a message that says what to fix."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api, payload, violations


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def submit_error(api: Api, **fields: Any) -> grpc.RpcError:
    return rpc_error(lambda: api.stub.SubmitTask(pb.SubmitTaskRequest(**fields), timeout=10))


@pytest.mark.parametrize(
    ("fields", "field", "hint"),
    [
        ({"type": ""}, "type", "is required"),
        ({"type": "no_such_type"}, "type", "unknown task type 'no_such_type'; registered types:"),
        ({"type": "echo", "max_attempts": -1}, "max_attempts", "between 1 and 100"),
        ({"type": "echo", "max_attempts": 101}, "max_attempts", "between 1 and 100"),
        ({"type": "echo", "priority": 5000}, "priority", "between -1000 and 1000"),
        ({"type": "echo", "priority": -1001}, "priority", "between -1000 and 1000"),
        ({"type": "echo", "timeout": duration_pb2.Duration(seconds=-1)}, "timeout", "between"),
        ({"type": "echo", "timeout": duration_pb2.Duration(seconds=10**9)}, "timeout", "between"),
        ({"type": "echo", "delay": duration_pb2.Duration(seconds=-5)}, "delay", "between"),
        ({"type": "echo", "delay": duration_pb2.Duration(seconds=10**8)}, "delay", "between"),
        (
            {"type": "echo", "delay": duration_pb2.Duration(seconds=1, nanos=-5)},
            "delay",
            "not a valid duration",
        ),
        ({"type": "echo", "idempotency_key": "has space"}, "idempotency_key", "letters, digits"),
        ({"type": "echo", "idempotency_key": "k" * 129}, "idempotency_key", "1-128"),
        ({"type": "echo", "labels": {"": "x"}}, "labels['']", "label keys"),
        ({"type": "echo", "labels": {"k": "v" * 300}}, "labels['k']", "at most 256"),
        (
            {"type": "sleep", "payload": payload(seconds="soon")},
            "payload",
            '"seconds" must be a number',
        ),
        ({"type": "sleep", "payload": payload(seconds=-1)}, "payload", "between 0 and"),
        ({"type": "csv_stats", "payload": payload(data="x")}, "payload", 'csv_stats needs "csv"'),
        ({"type": "csv_stats", "payload": payload(csv="")}, "payload", "empty"),
        ({"type": "csv_stats", "payload": payload(csv="a,,b\n1,2,3")}, "payload", "needs a name"),
    ],
)
def test_submit_bad_field(api: Api, fields: dict[str, Any], field: str, hint: str) -> None:
    error = submit_error(api, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert any(f == field and hint in d for f, d in found), found
    assert field in error.details() and hint in error.details()


def test_oversized_payload(api: Api) -> None:
    big = payload(blob="x" * (256 * 1024 + 1))
    error = submit_error(api, type="echo", payload=big)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "payload"
    assert "limit is 262144 bytes" in error.details()


def test_payload_cap_is_configurable(make_api) -> None:  # type: ignore[no-untyped-def]
    _, api = make_api(max_payload_bytes=100)
    error = submit_error(api, type="echo", payload=payload(blob="x" * 200))
    assert "limit is 100 bytes" in error.details()


def test_several_problems_are_all_reported(api: Api) -> None:
    error = submit_error(api, type="nope", max_attempts=-3, priority=99999)
    fields = {f for f, _ in violations(error)}
    assert fields == {"type", "max_attempts", "priority"}


def test_batch_violations_name_the_request(api: Api) -> None:
    requests = [
        pb.SubmitTaskRequest(type="echo"),
        pb.SubmitTaskRequest(type="echo", priority=2000),
        pb.SubmitTaskRequest(type=""),
    ]
    before = api.stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=10).tasks
    error = rpc_error(
        lambda: api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in violations(error)} == {"requests[1].priority", "requests[2].type"}
    # All or nothing: the valid first request was not accepted either.
    after = api.stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=10).tasks
    assert [t.id for t in after] == [t.id for t in before]


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_limits(api: Api, count: int) -> None:
    requests = [pb.SubmitTaskRequest(type="echo")] * count
    error = rpc_error(
        lambda: api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "requests"


BAD_IDS = ["", "x" * 129, "../etc/passwd", "id with space", "ünïcode", "a\nb"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize("method", ["GetTask", "CancelTask", "RetryTask", "WatchTask"])
def test_malformed_id_is_invalid_argument(api: Api, method: str, bad_id: str) -> None:
    request_type = getattr(pb, f"{method}Request")
    call = getattr(api.stub, method)
    if method == "WatchTask":
        error = rpc_error(lambda: list(call(request_type(id=bad_id), timeout=10)))
    else:
        error = rpc_error(lambda: call(request_type(id=bad_id), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "id"


@pytest.mark.parametrize("method", ["GetTask", "CancelTask", "RetryTask", "WatchTask"])
def test_unknown_id_is_not_found(api: Api, method: str) -> None:
    request = getattr(pb, f"{method}Request")(id="AAAAAAAAAAAAAAAAAAAAAA")
    call = getattr(api.stub, method)
    if method == "WatchTask":
        error = rpc_error(lambda: list(call(request, timeout=10)))
    else:
        error = rpc_error(lambda: call(request, timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "AAAAAAAAAAAAAAAAAAAAAA" in error.details()


def test_negative_page_size(api: Api) -> None:
    error = rpc_error(lambda: api.stub.ListTasks(pb.ListTasksRequest(page_size=-1), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "page_size"


def test_unknown_state_filter(api: Api) -> None:
    error = rpc_error(lambda: api.stub.ListTasks(pb.ListTasksRequest(states=[0]), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "states[0]"


@pytest.mark.parametrize(
    "token",
    ["garbage", "AAAA", "x" * 500, "eyJjIjoxfQ", "!!!", "eyJjIjo1LCJmIjoiYWJjIn0" + "A" * 22],
)
def test_forged_page_token(api: Api, token: str) -> None:
    error = rpc_error(lambda: api.stub.ListTasks(pb.ListTasksRequest(page_token=token), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error)[0][0] == "page_token"


def test_tampered_and_foreign_page_tokens(api: Api, make_api) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        api.submit("echo", {}, labels={"suite": "tokens"})
    first = api.stub.ListTasks(
        pb.ListTasksRequest(page_size=1, labels={"suite": "tokens"}), timeout=10
    )
    token = first.next_page_token
    assert token
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (tampered, token[:-1]):
        error = rpc_error(
            lambda bad=bad: api.stub.ListTasks(
                pb.ListTasksRequest(page_size=1, labels={"suite": "tokens"}, page_token=bad),
                timeout=10,
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same token with other filters is refused, not misapplied.
    error = rpc_error(
        lambda: api.stub.ListTasks(pb.ListTasksRequest(page_size=1, page_token=token), timeout=10)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "other filters" in error.details()
    # A token from another server (another signing key) is refused.
    _, other = make_api()
    error = rpc_error(
        lambda: other.stub.ListTasks(
            pb.ListTasksRequest(page_size=1, labels={"suite": "tokens"}, page_token=token),
            timeout=10,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_since_version(api: Api) -> None:
    task = api.submit("echo", {})
    error = rpc_error(
        lambda: list(
            api.stub.WatchTask(pb.WatchTaskRequest(id=task.id, since_version=-1), timeout=10)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_survives_garbage_bytes(api: Api) -> None:
    """A request that is not a valid message at all is refused by gRPC, and
    the server keeps serving."""
    raw = api.channel.unary_unary(
        "/conveyor.v1.TaskService/SubmitTask",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    error = rpc_error(lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid conveyor.v1.SubmitTaskRequest" in error.details()
    assert api.submit("echo", {}).id


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_a_payload_are_refused(api: Api, number: float) -> None:
    bad = payload(ok=1.5, a={"b": [1, 2, number]})
    error = submit_error(api, type="echo", payload=bad)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert [field for field, _ in found] == ["payload.a.b[2]"], found
    assert "finite" in found[0][1]
    assert "payload.a.b[2]" in error.details()


def test_non_finite_numbers_in_a_batch_name_the_request(api: Api) -> None:
    requests = [
        pb.SubmitTaskRequest(type="echo", payload=payload(x=1)),
        pb.SubmitTaskRequest(type="echo", payload=payload(x={"odd key": math.nan})),
    ]
    error = rpc_error(
        lambda: api.stub.BatchSubmitTasks(pb.BatchSubmitTasksRequest(requests=requests), timeout=10)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations(error)] == ["requests[1].payload.x['odd key']"]
