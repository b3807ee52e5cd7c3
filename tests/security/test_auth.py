"""Bearer tokens: where they come from, which calls need one, and the refusals."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor import AsyncClient, Client, TaskSpec, TaskState, Unauthenticated
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_server import ServerConfig
from conveyor_server._auth import load_tokens, parse_token_file, parse_token_list
from conveyor_server._main import config_from_args
from conveyor_server.stores import ListQuery
from tests.support.server import ServerThread

MakeServer = Callable[..., ServerThread]

# Every TaskService method with a request that would succeed or fail on its
# own merits once past authentication.
CALLS: list[tuple[str, Any]] = [
    ("SubmitTask", pb.SubmitTaskRequest(type="echo")),
    ("BatchSubmitTasks", pb.BatchSubmitTasksRequest(requests=[pb.SubmitTaskRequest(type="echo")])),
    ("GetTask", pb.GetTaskRequest(id="some-id")),
    ("WatchTask", pb.WatchTaskRequest(id="some-id")),
    ("ListTasks", pb.ListTasksRequest()),
    ("CancelTask", pb.CancelTaskRequest(id="some-id")),
    ("RetryTask", pb.RetryTaskRequest(id="some-id")),
    ("ListTaskTypes", pb.ListTaskTypesRequest()),
    ("ListWorkers", pb.ListWorkersRequest()),
]


@pytest.fixture
def stub(auth_server: ServerThread) -> Iterator[pb_grpc.TaskServiceStub]:
    with grpc.insecure_channel(auth_server.address) as channel:
        yield pb_grpc.TaskServiceStub(channel)


def call(stub: pb_grpc.TaskServiceStub, method: str, request: Any, **kwargs: Any) -> Any:
    """Calls `method`; a streaming reply is read to its end."""
    reply = getattr(stub, method)(request, timeout=5, **kwargs)
    return list(reply) if method == "WatchTask" else reply


# --- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "request_message"), CALLS, ids=[m for m, _ in CALLS])
@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ((), "requires a bearer token: send the metadata 'authorization: Bearer <token>'"),
        ((("authorization", "Bearer token-nobody-was-given-00000000"),), "is not valid"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must read 'Bearer <token>'"),
        ((("authorization", "Bearer"),), "must read 'Bearer <token>'"),
    ],
    ids=["no-token", "wrong-token", "not-bearer", "empty-bearer"],
)
def test_every_call_without_a_valid_token_is_unauthenticated(
    stub: pb_grpc.TaskServiceStub,
    method: str,
    request_message: Any,
    metadata: tuple[tuple[str, str], ...],
    says: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, method, request_message, metadata=metadata)

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert says in caught.value.details()
    # Nothing of the token comes back.
    assert "nobody" not in caught.value.details()


def test_a_refused_submit_creates_no_task(
    auth_server: ServerThread, stub: pb_grpc.TaskServiceStub, tokens: dict[str, str]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitTask(pb.SubmitTaskRequest(type="echo", labels={"refused": "yes"}), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

    listed = stub.ListTasks(
        pb.ListTasksRequest(labels={"refused": "yes"}),
        timeout=5,
        metadata=(("authorization", f"Bearer {tokens['team-a']}"),),
    )
    assert list(listed.tasks) == []
    # A task that slipped through would belong to no tenant (""), which no
    # token can list: ask the store itself, for that tenant and every other.
    # The server is fresh, so it must hold no task at all, finished or not.
    server = auth_server.server
    assert server is not None
    store = server.store
    for tenant in ["", *tokens]:
        page, _ = auth_server.call(
            lambda tenant=tenant: store.list_page(ListQuery(page_size=10, tenant=tenant))
        )
        assert page == [], f"a refused submit created a task of tenant {tenant!r}"


def test_sdk_raises_unauthenticated_without_a_token(auth_server: ServerThread) -> None:
    with Client(auth_server.address) as client, pytest.raises(Unauthenticated) as caught:
        client.submit("echo", {})
    assert "authorization: Bearer <token>" in caught.value.message


def test_a_token_of_the_scheme_is_case_insensitive(
    stub: pb_grpc.TaskServiceStub, tokens: dict[str, str]
) -> None:
    reply = stub.ListTasks(
        pb.ListTasksRequest(),
        timeout=5,
        metadata=(("authorization", f"bearer {tokens['team-a']}"),),
    )
    assert reply is not None


# --- what needs no token ------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "conveyor.v1.TaskService"])
def test_health_needs_no_token(auth_server: ServerThread, service: str) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_no_token(auth_server: ServerThread) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
    names = {service.name for service in replies[0].list_services_response.service}
    assert "conveyor.v1.TaskService" in names


# --- the SDK with a token -----------------------------------------------------------


def test_sdk_token_works_on_every_call(auth_server: ServerThread, tokens: dict[str, str]) -> None:
    with Client(auth_server.address, token=tokens["team-a"], timeout=5) as client:
        done = client.submit("echo", {"n": 1})
        assert [t.state for t in client.watch(done.id)][-1] is TaskState.SUCCEEDED
        assert client.get(done.id).result == {"n": 1}
        [batched] = client.submit_batch([TaskSpec("fail", {})])
        assert batched.wait(timeout=10).state is TaskState.FAILED
        assert client.retry(batched.id).state is TaskState.PENDING
        waiting = client.submit("echo", {}, delay=60)
        assert client.cancel(waiting.id).state is TaskState.CANCELLED
        assert {t.id for t in client.list()} == {done.id, batched.id, waiting.id}


def test_hashed_token_is_accepted(auth_server: ServerThread, tokens: dict[str, str]) -> None:
    # team-b's token is stored as sha256:HEX in the tokens file.
    with Client(auth_server.address, token=tokens["team-b"]) as client:
        assert client.submit("echo", {}).wait(timeout=10).state is TaskState.SUCCEEDED


async def test_async_sdk_token_works_for_submit_and_watch(
    auth_server: ServerThread, tokens: dict[str, str]
) -> None:
    async with AsyncClient(auth_server.address, token=tokens["team-a"]) as client:
        handle = await client.submit("progress_steps", {"steps": 3})
        states = [task.state async for task in handle.watch()]
        listed = [task.id async for task in client.list()]
    assert states[-1] is TaskState.SUCCEEDED
    assert handle.id in listed


def test_sdk_refuses_a_token_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        Client("localhost:1", token="two words")
    with pytest.raises(ValueError, match="printable ASCII"):
        Client("localhost:1", token="")
    with pytest.raises(ValueError, match="not both"):
        Client("localhost:1", token="abc", metadata=[("authorization", "Bearer x")])


# --- where tokens come from -------------------------------------------------------


def test_token_file_reads_plain_and_hashed_tokens_and_skips_comments() -> None:
    hashed = hashlib.sha256(b"another-token-0123456789").hexdigest()
    entries = parse_token_file(
        "# a comment\n\n  a-token-of-sixteen-or-more  tenant-1  # trailing\n"
        f"sha256:{hashed.upper()} tenant-2\n",
        "tokens",
    )
    assert entries == [
        (hashlib.sha256(b"a-token-of-sixteen-or-more").digest(), "tenant-1"),
        (bytes.fromhex(hashed), "tenant-2"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just-one-word-here-0123456\n", "tokens line 1: expected 'TOKEN TENANT'"),
        ("# c\na-long-enough-token-000 t extra\n", "tokens line 2: expected"),
        ("short tenant\n", "tokens line 1: the token is shorter than 16 characters"),
        ("sha256:abc tenant\n", "tokens line 1: sha256: must be followed by 64 hex digits"),
        ("a-long-enough-token-000 ten/ant\n", "tokens line 1: tenant 'ten/ant' must be"),
    ],
)
def test_token_file_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_token_file(text, "tokens")


def test_token_list_reads_pairs_and_tokens_ending_in_equals() -> None:
    entries = parse_token_list(
        " a-token-of-sixteen-chars===team-a, ,b-token-of-sixteen-chars=b", "X"
    )
    assert [tenant for _, tenant in entries] == ["team-a", "b"]
    assert entries[0][0] == hashlib.sha256(b"a-token-of-sixteen-chars==").digest()
    with pytest.raises(ValueError, match="X entry 1: expected TOKEN=TENANT"):
        parse_token_list("no-tenant-given-here", "X")


def test_auth_is_off_without_tokens() -> None:
    assert load_tokens(ServerConfig()) is None


def test_a_token_file_with_no_token_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "tokens"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="names no tokens"):
        load_tokens(ServerConfig(auth_tokens_file=str(empty)))
    with pytest.raises(ValueError, match="CONVEYOR_AUTH_TOKENS names no tokens"):
        load_tokens(ServerConfig(auth_tokens=" , "))


def test_a_missing_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read --auth-tokens-file"):
        load_tokens(ServerConfig(auth_tokens_file=str(tmp_path / "missing")))


def test_file_and_environment_tokens_add_up_but_may_not_disagree(tokens_file: Path) -> None:
    table = load_tokens(
        ServerConfig(
            auth_tokens_file=str(tokens_file), auth_tokens="token-of-team-c-0123456789=team-c"
        )
    )
    assert table is not None
    assert table.tenants == {"team-a", "team-b", "team-c"}
    assert table.tenant_of("token-of-team-c-0123456789") == "team-c"
    assert table.tenant_of("token-of-team-c-012345678") is None
    with pytest.raises(ValueError, match="one token is given for two tenants"):
        load_tokens(
            ServerConfig(
                auth_tokens_file=str(tokens_file),
                auth_tokens="token-of-team-a-0123456789abcdef=team-z",
            )
        )


def test_tokens_come_from_the_environment_never_a_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_AUTH_TOKENS", "token-of-team-c-0123456789=team-c")
    config = config_from_args(["--auth-tokens-file", "tokens.txt"])
    assert config.auth_tokens == "token-of-team-c-0123456789=team-c"
    assert config.auth_tokens_file == "tokens.txt"
    assert "token-of-team-c" not in repr(config)
    with pytest.raises(SystemExit):
        config_from_args(["--auth-tokens", "x=y"])
    assert "unrecognized arguments: --auth-tokens" in capsys.readouterr().err


def test_environment_tokens_work_end_to_end(make_server: MakeServer) -> None:
    server = make_server(auth_tokens="token-of-team-e-0123456789=team-e")
    with Client(server.address, token="token-of-team-e-0123456789") as client:
        assert client.submit("echo", {}).wait(timeout=10).state is TaskState.SUCCEEDED


# --- warnings at start --------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_start_warns_loudly_when_auth_is_off(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor_server"):
        make_server()
    assert "AUTHENTICATION IS OFF" in _warnings(caplog)


def test_start_warns_when_tokens_travel_in_clear_text(
    make_server: MakeServer, tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor_server"):
        make_server(auth_tokens_file=str(tokens_file))
    warnings = _warnings(caplog)
    assert "TLS IS OFF" in warnings
    assert "AUTHENTICATION IS OFF" not in warnings


def test_start_is_quiet_with_tls_and_tokens(
    make_server: MakeServer,
    tokens_file: Path,
    mtls_settings: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor_server"):
        make_server(auth_tokens_file=str(tokens_file), **mtls_settings)
    assert _warnings(caplog) == ""
    assert (
        "TLS: on, client certificates required (mutual TLS); token authentication: on, 2 tenants"
        in (caplog.text)
    )
