"""Tenants: each token sees its own tasks only, on every call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from conveyor import AlreadyExists, AsyncClient, Client, TaskNotFound, TaskSpec, TaskState
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from tests.support.server import ServerThread


@pytest.fixture
def auth_server(
    make_server: Callable[..., ServerThread], tokens_file: Path, store_url: str
) -> ServerThread:
    """Token authentication over plaintext, on each store: isolation must
    hold on every one."""
    return make_server(auth_tokens_file=str(tokens_file), store=store_url)


@pytest.fixture
def alice(auth_server: ServerThread, tokens: dict[str, str]) -> Iterator[Client]:
    with Client(auth_server.address, token=tokens["team-a"], timeout=5) as client:
        yield client


@pytest.fixture
def bob(auth_server: ServerThread, tokens: dict[str, str]) -> Iterator[Client]:
    with Client(auth_server.address, token=tokens["team-b"], timeout=5) as client:
        yield client


def test_another_tenants_task_is_not_found_on_every_call(alice: Client, bob: Client) -> None:
    failed = alice.submit("fail", {}).wait(timeout=10)
    waiting = alice.submit("echo", {}, delay=60)

    with pytest.raises(TaskNotFound):
        bob.get(failed.id)
    with pytest.raises(TaskNotFound):
        bob.wait(failed.id, timeout=5)
    with pytest.raises(TaskNotFound):
        list(bob.watch(waiting.id))
    with pytest.raises(TaskNotFound):
        bob.retry(failed.id)
    with pytest.raises(TaskNotFound):
        bob.cancel(waiting.id)

    # Untouched, and still the owner's.
    assert alice.get(failed.id).state is TaskState.FAILED
    assert alice.get(waiting.id).state is TaskState.PENDING
    assert alice.retry(failed.id).state is TaskState.PENDING
    assert alice.cancel(waiting.id).state is TaskState.CANCELLED


def test_not_found_says_the_same_as_for_an_unknown_id(alice: Client, bob: Client) -> None:
    mine = alice.submit("echo", {})

    with pytest.raises(TaskNotFound) as foreign:
        bob.get(mine.id)
    with pytest.raises(TaskNotFound) as unknown:
        bob.get("no-such-task")

    assert foreign.value.message == f"task {mine.id} not found"
    assert unknown.value.message == "task no-such-task not found"


def test_lists_show_only_ones_own_tasks(alice: Client, bob: Client) -> None:
    label = {"run": uuid.uuid4().hex}
    alices = {alice.submit("echo", {}, labels=label).id for _ in range(3)}
    bobs = {h.id for h in bob.submit_batch([TaskSpec("echo", {}, labels=label)] * 2)}

    assert {t.id for t in alice.list(labels=label)} == alices
    assert {t.id for t in bob.list(labels=label)} == bobs
    assert {t.id for t in bob.list()}.isdisjoint(alices)


def test_a_page_token_of_one_tenant_is_invalid_for_another(
    auth_server: ServerThread, tokens: dict[str, str], alice: Client, bob: Client
) -> None:
    label = {"run": uuid.uuid4().hex}
    for _ in range(3):
        alice.submit("echo", {}, labels=label)
        bob.submit("echo", {}, labels=label)
    request = pb.ListTasksRequest(page_size=1, labels=label)
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        as_alice = (("authorization", f"Bearer {tokens['team-a']}"),)
        as_bob = (("authorization", f"Bearer {tokens['team-b']}"),)
        page = stub.ListTasks(request, metadata=as_alice, timeout=5)
        assert page.next_page_token
        request.page_token = page.next_page_token

        with pytest.raises(grpc.RpcError) as caught:
            stub.ListTasks(request, metadata=as_bob, timeout=5)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in caught.value.details()

        # The owner goes on paging with it.
        second = stub.ListTasks(request, metadata=as_alice, timeout=5)
        assert [t.id for t in second.tasks] != [t.id for t in page.tasks]


def test_idempotency_keys_are_per_tenant(alice: Client, bob: Client) -> None:
    key = f"job-{uuid.uuid4().hex}"

    first = alice.submit("echo", {"n": 1}, idempotency_key=key)
    again = alice.submit("echo", {"n": 1}, idempotency_key=key)
    bobs = bob.submit("echo", {"n": 2}, idempotency_key=key)

    assert again.id == first.id
    assert bobs.id != first.id
    assert bob.get(bobs.id).payload == {"n": 2}
    with pytest.raises(AlreadyExists):
        alice.submit("echo", {"n": 3}, idempotency_key=key)
    with pytest.raises(AlreadyExists):
        bob.submit("echo", {"n": 3}, idempotency_key=key)


def test_batch_submits_belong_to_the_submitter(alice: Client, bob: Client) -> None:
    handles = alice.submit_batch([TaskSpec("echo", {"i": i}) for i in range(3)])

    for handle in handles:
        assert alice.get(handle.id).id == handle.id
        with pytest.raises(TaskNotFound):
            bob.get(handle.id)


async def test_concurrent_calls_of_two_tenants_never_mix(
    auth_server: ServerThread, tokens: dict[str, str]
) -> None:
    """The tenant travels in a context variable; interleave unary calls and
    watch streams of both tenants on one server to show each call keeps its own."""
    async with (
        AsyncClient(auth_server.address, token=tokens["team-a"]) as a,
        AsyncClient(auth_server.address, token=tokens["team-b"]) as b,
    ):
        a_tasks = [await a.submit("progress_steps", {"steps": 4}) for _ in range(4)]
        b_tasks = [await b.submit("progress_steps", {"steps": 4}) for _ in range(4)]

        async def follow(client: AsyncClient, task_id: str) -> TaskState:
            return [task.state async for task in client.watch(task_id)][-1]

        async def foreign_get(client: AsyncClient, task_id: str) -> bool:
            try:
                await client.get(task_id)
            except TaskNotFound:
                return True
            return False

        results = await asyncio.gather(
            *(follow(a, h.id) for h in a_tasks),
            *(follow(b, h.id) for h in b_tasks),
            *(foreign_get(b, h.id) for h in a_tasks),
            *(foreign_get(a, h.id) for h in b_tasks),
            *(a.get(h.id) for h in a_tasks),
            *(b.get(h.id) for h in b_tasks),
        )

    assert results[:8] == [TaskState.SUCCEEDED] * 8
    assert results[8:16] == [True] * 8
    assert len(results[16:]) == 8


def test_without_auth_every_caller_shares_one_tenant(
    server: ServerThread, tokens: dict[str, str]
) -> None:
    # With authentication off a token is never looked at.
    with Client(server.address) as anonymous, Client(server.address, token=tokens["team-a"]) as t:
        task = anonymous.submit("echo", {})
        assert t.get(task.id).id == task.id
