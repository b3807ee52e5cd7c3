"""Refusals of the HTTP/JSON API: the HTTP status of AIP-193 and a
google.rpc.Status body that says what to fix."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.http import Http, Reply
from tests.support.server import ServerThread

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def violations(reply: Reply) -> dict[str, str]:
    [detail] = reply.body["details"]
    assert detail["@type"] == BAD_REQUEST
    return {v["field"]: v["description"] for v in detail["field_violations"]}


def test_an_unknown_type_is_400_with_a_field_violation(server: ServerThread) -> None:
    reply = Http(server).post("/v1/tasks", {"type": "no_such_type"})
    assert reply.status == 400
    assert reply.body["code"] == 3  # INVALID_ARGUMENT
    assert "registered types" in violations(reply)["type"]


def test_a_body_that_is_not_the_request_message_is_400(server: ServerThread) -> None:
    http = Http(server)
    typo = http.post("/v1/tasks", {"typ": "echo"})
    assert typo.status == 400
    assert "conveyor.v1.SubmitTaskRequest" in violations(typo)["body"]
    assert "typ" in violations(typo)["body"]
    broken = http.post("/v1/tasks", b"{not json")
    assert broken.status == 400 and "body" in violations(broken)


def test_a_body_must_be_sent_as_json(server: ServerThread) -> None:
    reply = Http(server).post(
        "/v1/tasks", b'{"type": "echo"}', headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 400
    assert "application/json" in reply.body["message"]


def test_an_unknown_id_is_404(server: ServerThread) -> None:
    http = Http(server)
    for reply in (
        http.get("/v1/tasks/no-such-task"),
        http.post("/v1/tasks/no-such-task:cancel"),
        http.post("/v1/tasks/no-such-task:retry"),
    ):
        assert reply.status == 404
        assert reply.body == {"code": 5, "message": "task no-such-task not found"}


def test_an_invalid_id_is_400(server: ServerThread) -> None:
    reply = Http(server).get("/v1/tasks/" + "x" * 200)
    assert reply.status == 400
    assert "at most 128" in violations(reply)["id"]


def test_cancelling_a_finished_task_is_400_failed_precondition(server: ServerThread) -> None:
    http = Http(server)
    task_id = http.post("/v1/tasks", {"type": "echo"}).body["task"]["id"]
    http.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    reply = http.post(f"/v1/tasks/{task_id}:cancel")
    assert reply.status == 400
    assert reply.body["code"] == 9  # FAILED_PRECONDITION
    retry = http.post(f"/v1/tasks/{task_id}:retry")
    assert retry.status == 400 and retry.body["code"] == 9


def test_the_same_idempotency_key_with_another_request_is_409(server: ServerThread) -> None:
    http = Http(server)
    first = http.post("/v1/tasks", {"type": "echo", "idempotency_key": "http-key-1"})
    again = http.post("/v1/tasks", {"type": "echo", "idempotency_key": "http-key-1"})
    assert again.status == 200 and again.body["task"]["id"] == first.body["task"]["id"]
    other = http.post("/v1/tasks", {"type": "echo", "idempotency_key": "http-key-1", "priority": 5})
    assert other.status == 409
    assert other.body["code"] == 6  # ALREADY_EXISTS


def test_an_oversized_payload_is_400(make_server: Callable[..., ServerThread]) -> None:
    http = Http(make_server(max_payload_bytes=1024))
    reply = http.post("/v1/tasks", {"type": "echo", "payload": {"blob": "x" * 2000}})
    assert reply.status == 400
    assert "the limit is 1024 bytes" in violations(reply)["payload"]


def test_a_full_queue_is_429(make_server: Callable[..., ServerThread]) -> None:
    http = Http(make_server(max_queue=2))
    for _ in range(2):
        assert http.post("/v1/tasks", {"type": "echo", "delay": "60s"}).status == 200
    reply = http.post("/v1/tasks", {"type": "echo"})
    assert reply.status == 429
    assert reply.body["code"] == 8  # RESOURCE_EXHAUSTED
    assert "--max-queue" in reply.body["message"]


def test_bad_list_parameters_name_the_parameter(server: ServerThread) -> None:
    http = Http(server)
    state = http.get("/v1/tasks?states=TASK_STATE_BOGUS")
    assert state.status == 400 and "TASK_STATE_BOGUS" in violations(state)["states"]
    size = http.get("/v1/tasks?page_size=many")
    assert size.status == 400 and "page_size" in violations(size)
    unknown = http.get("/v1/tasks?stat=TASK_STATE_FAILED")
    assert unknown.status == 400 and "states" in violations(unknown)["stat"]
    label = http.get("/v1/tasks?labels=nokey")
    assert label.status == 400 and "key=value" in violations(label)["labels[0]"]
    token = http.get("/v1/tasks?page_token=garbage")
    assert token.status == 400 and "page_token" in violations(token)


def test_unknown_routes_and_methods(server: ServerThread) -> None:
    http = Http(server)
    missing = http.get("/v1/nothing")
    assert missing.status == 404 and missing.body["code"] == 5
    wrong = http.call("PUT", "/v1/tasks")
    assert wrong.status == 405 and wrong.body["code"] == 12
    assert set(wrong.headers["Allow"].split(",")) == {"GET", "POST"}
    verb = http.post("/v1/tasks/abc:explode")
    assert verb.status == 404 and ":cancel" in verb.body["message"]


def test_a_draining_server_refuses_submits_with_503(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    assert thread.server is not None
    thread.server.gate.open = False  # what stop() does first
    reply = Http(thread).post("/v1/tasks", {"type": "echo"})
    assert reply.status == 503 and reply.body["code"] == 14
