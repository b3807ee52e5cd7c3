"""WatchTasks and tenants: a stream shows only its tenant's tasks, and
counts against the tenant's watch quota."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from tests.support.server import ServerThread

WATCH_QUOTA = 2


def test_a_stream_shows_only_its_tenants_tasks_and_counts_against_its_quota(
    make_server: Callable[..., ServerThread], tokens_file: Path, tokens: dict[str, str]
) -> None:
    server = make_server(auth_tokens_file=str(tokens_file), max_watchers_per_tenant=WATCH_QUOTA)
    label = {"run": uuid.uuid4().hex[:12]}
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)

        def auth(tenant: str) -> list[tuple[str, str]]:
            return [("authorization", f"Bearer {tokens[tenant]}")]

        def watch(tenant: str) -> grpc.Call:
            stream = stub.WatchTasks(
                pb.WatchTasksRequest(labels=label), metadata=auth(tenant), timeout=10
            )
            stream.initial_metadata()
            return stream  # type: ignore[no-any-return]

        alice = watch("team-a")
        bob = watch("team-b")
        for tenant in ("team-b", "team-a"):
            request = pb.SubmitTaskRequest(type="echo", labels=label)
            stub.SubmitTask(request, metadata=auth(tenant), timeout=10)
        seen_by_bob = next(bob).task
        seen_by_alice = next(alice).task
        assert seen_by_bob.id != seen_by_alice.id
        for stream, seen_id in ((alice, seen_by_alice.id), (bob, seen_by_bob.id)):
            for message in stream:
                assert message.task.id == seen_id
                if message.task.state == task_pb2.TASK_STATE_SUCCEEDED:
                    break

        # Alice holds one stream; one more fills her quota, a third is refused.
        second = watch("team-a")
        with pytest.raises(grpc.RpcError) as refused:
            next(watch("team-a"))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-watchers-per-tenant" in (refused.value.details() or "")
        for stream in (alice, bob, second):
            stream.cancel()
