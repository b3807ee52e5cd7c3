"""Per-tenant quotas: one tenant cannot fill the queue or the watch streams
of the others. Checked on every store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from conveyor import Client, ResourceExhausted, TaskSpec, TaskState
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from tests.support.server import ServerThread

QUEUE_QUOTA = 3
WATCH_QUOTA = 2


@pytest.fixture
def quota_server(
    make_server: Callable[..., ServerThread], tokens_file: Path, store_url: str
) -> ServerThread:
    return make_server(
        auth_tokens_file=str(tokens_file),
        store=store_url,
        max_queue_per_tenant=QUEUE_QUOTA,
        max_watchers_per_tenant=WATCH_QUOTA,
    )


@pytest.fixture
def clients(quota_server: ServerThread, tokens: dict[str, str]) -> Iterator[tuple[Client, Client]]:
    with (
        Client(quota_server.address, token=tokens["team-a"], timeout=5) as alice,
        Client(quota_server.address, token=tokens["team-b"], timeout=5) as bob,
    ):
        yield alice, bob


def test_a_tenant_past_its_queue_quota_is_refused_and_others_are_not(
    clients: tuple[Client, Client],
) -> None:
    alice, bob = clients
    queued = [alice.submit("echo", {}, delay=60) for _ in range(QUEUE_QUOTA)]
    with pytest.raises(ResourceExhausted, match=r"tenant 'team-a' has 3 unfinished tasks"):
        alice.submit("echo", {}, delay=60)
    # A batch that would cross the quota is refused whole.
    alice.cancel(queued[0].id)
    with pytest.raises(ResourceExhausted, match="--max-queue-per-tenant"):
        alice.submit_batch([TaskSpec("echo", {}, delay=60), TaskSpec("echo", {}, delay=60)])
    assert len(list(alice.list(states=[TaskState.PENDING]))) == QUEUE_QUOTA - 1
    # The other tenant has a quota of its own.
    for _ in range(QUEUE_QUOTA):
        bob.submit("echo", {}, delay=60)
    # Finished work frees the quota: one slot is free after the cancel.
    alice.submit("echo", {}, delay=60)
    # RetryTask counts too: the cancelled task cannot come back past the quota.
    with pytest.raises(ResourceExhausted):
        alice.retry(queued[0].id)


def test_a_tenant_past_its_watch_quota_is_refused_and_others_are_not(
    quota_server: ServerThread, clients: tuple[Client, Client], tokens: dict[str, str]
) -> None:
    alice, bob = clients
    task = alice.submit("echo", {}, delay=60)
    other = bob.submit("echo", {}, delay=60)
    with grpc.insecure_channel(quota_server.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)

        def watch(task_id: str, tenant: str) -> grpc.Call:
            stream = stub.WatchTask(
                pb.WatchTaskRequest(id=task_id),
                metadata=[("authorization", f"Bearer {tokens[tenant]}")],
                timeout=10,
            )
            next(stream)  # the first snapshot: the stream is open
            return stream  # type: ignore[no-any-return]

        open_streams = [watch(task.id, "team-a") for _ in range(WATCH_QUOTA)]
        with pytest.raises(grpc.RpcError) as refused:
            watch(task.id, "team-a")
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-watchers-per-tenant" in (refused.value.details() or "")
        # The other tenant still watches.
        bob_stream = watch(other.id, "team-b")
        # Closing a stream gives the slot back.
        open_streams.pop().cancel()
        # (the server frees it once it sees the stream end: poll briefly)
        reopened = None
        for _ in range(100):
            try:
                reopened = watch(task.id, "team-a")
                break
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                time.sleep(0.05)
        assert reopened is not None
        for stream in [*open_streams, bob_stream, reopened]:
            stream.cancel()
