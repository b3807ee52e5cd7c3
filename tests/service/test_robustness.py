"""Requests of any shape: never INTERNAL or UNKNOWN, never a crashed server."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.v1 import task_service_pb2 as pb
from tests.support.raw_api import Api

pytestmark = pytest.mark.slow

ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
names = st.one_of(st.sampled_from(["sleep", "csv_stats", "echo", "fail", ""]), st.text(max_size=40))
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
durations = st.builds(
    duration_pb2.Duration,
    seconds=st.integers(min_value=-(10**10), max_value=10**10),
    nanos=st.integers(min_value=-999_999_999, max_value=999_999_999),
)


def submit_requests() -> st.SearchStrategy[pb.SubmitTaskRequest]:
    def build(
        type: str,
        payload: dict[str, Any],
        labels: dict[str, str],
        key: str,
        attempts: int,
        priority: int,
        timeout: Any,
        delay: Any,
    ) -> pb.SubmitTaskRequest:
        request = pb.SubmitTaskRequest(
            type=type, labels=labels, idempotency_key=key, max_attempts=attempts, priority=priority
        )
        request.payload.update(payload)
        if timeout is not None:
            request.timeout.CopyFrom(timeout)
        if delay is not None:
            request.delay.CopyFrom(delay)
        return request

    return st.builds(
        build,
        names,
        payloads,
        st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=3),
        st.text(max_size=140),
        int32,
        int32,
        st.none() | durations,
        st.none() | durations,
    )


def code_of(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=submit_requests())
def test_random_submits(api: Api, request: pb.SubmitTaskRequest) -> None:
    code = code_of(lambda: api.stub.SubmitTask(request, timeout=10))
    assert code in ACCEPTABLE
    batch = pb.BatchSubmitTasksRequest(requests=[request, request])
    assert code_of(lambda: api.stub.BatchSubmitTasks(batch, timeout=10)) in ACCEPTABLE


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    task_id=st.text(max_size=150),
    token=st.text(max_size=100),
    size=int32,
    states=st.lists(int32, max_size=3),
    since=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_random_reads_and_changes(
    api: Api, task_id: str, token: str, size: int, states: list[int], since: int
) -> None:
    for call in (
        lambda: api.stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=10),
        lambda: api.stub.CancelTask(pb.CancelTaskRequest(id=task_id), timeout=10),
        lambda: api.stub.RetryTask(pb.RetryTaskRequest(id=task_id), timeout=10),
        lambda: list(
            api.stub.WatchTask(pb.WatchTaskRequest(id=task_id, since_version=since), timeout=10)
        ),
        lambda: api.stub.ListTasks(
            pb.ListTasksRequest(page_size=size, page_token=token, states=states),  # type: ignore[arg-type]
            timeout=10,
        ),
    ):
        assert code_of(call) in ACCEPTABLE


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_random_bytes(api: Api, raw: bytes) -> None:
    for method in ("SubmitTask", "GetTask", "ListTasks", "BatchSubmitTasks"):
        call = api.channel.unary_unary(
            f"/conveyor.v1.TaskService/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        assert code_of(lambda call=call: call(raw, timeout=10)) in ACCEPTABLE
    stream = api.channel.unary_stream(
        "/conveyor.v1.TaskService/WatchTask",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    assert code_of(lambda: list(stream(raw, timeout=10))) in ACCEPTABLE


def test_server_is_healthy_afterwards(api: Api) -> None:
    task = api.submit("echo", {"still": "alive"})
    assert api.wait(task.id).result.struct_value["still"] == "alive"
