"""Tokens on the HTTP/JSON API: bearer headers, tenants, the session cookie
and its CSRF token."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import Client
from tests.support.http import Http
from tests.support.server import ServerThread

TOKENS = {
    "team-a": "http-token-of-team-a-0123456789",
    "team-b": "http-token-of-team-b-9876543210",
}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    hashed = hashlib.sha256(TOKENS["team-b"].encode()).hexdigest()
    path.write_text(f"{TOKENS['team-a']} team-a\nsha256:{hashed} team-b\n")
    return path


@pytest.fixture
def auth_server(
    make_server: Callable[..., ServerThread], tokens_file: Path, store_url: str
) -> ServerThread:
    return make_server(auth_tokens_file=str(tokens_file), store=store_url)


def login(server: ServerThread, token: str) -> tuple[Http, str]:
    """A client holding a session cookie, and the session's CSRF token."""
    http = Http(server)
    reply = http.post("/v1/session", {"token": token})
    assert reply.status == 200, reply.body
    cookie = reply.headers["Set-Cookie"]
    http.cookie = cookie.split(";")[0]
    return http, reply.body["csrf_token"]


def test_requests_without_a_valid_token_are_401(auth_server: ServerThread) -> None:
    for http, words in (
        (Http(auth_server), "Authorization: Bearer"),
        (Http(auth_server, token="not-a-token-anyone-was-given"), "not valid"),
    ):
        for reply in (http.get("/v1/tasks"), http.post("/v1/tasks", {"type": "echo"})):
            assert reply.status == 401
            assert reply.body["code"] == 16  # UNAUTHENTICATED
            assert words in reply.body["message"]
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    basic = Http(auth_server).get("/v1/tasks", headers={"Authorization": "Basic abc"})
    assert basic.status == 401 and "Bearer <token>" in basic.body["message"]


def test_tenants_see_only_their_own_tasks(auth_server: ServerThread) -> None:
    alice = Http(auth_server, TOKENS["team-a"])
    bob = Http(auth_server, TOKENS["team-b"])
    task_id = alice.post("/v1/tasks", {"type": "echo"}).body["task"]["id"]
    assert alice.get(f"/v1/tasks/{task_id}").status == 200
    assert bob.get(f"/v1/tasks/{task_id}").status == 404
    assert bob.post(f"/v1/tasks/{task_id}:cancel").status == 404
    assert bob.post(f"/v1/tasks/{task_id}:retry").status == 404
    assert bob.get(f"/v1/tasks/{task_id}:watch").status == 404
    assert task_id not in [t["id"] for t in bob.get("/v1/tasks").body.get("tasks", [])]
    assert task_id in [t["id"] for t in alice.get("/v1/tasks").body["tasks"]]
    alice.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    assert sum(bob.get("/v1/stats").body["counts"].values()) == 0
    assert alice.get("/v1/stats").body["counts"]["TASK_STATE_SUCCEEDED"] == 1
    # The same tenant over gRPC sees the task, the other does not.
    with Client(auth_server.address, token=TOKENS["team-a"]) as client:
        assert client.get(task_id).id == task_id


def test_a_session_cookie_is_httponly_and_samesite_strict(auth_server: ServerThread) -> None:
    reply = Http(auth_server).post("/v1/session", {"token": TOKENS["team-a"]})
    assert reply.status == 200
    assert reply.body["tenant"] == "team-a"
    cookie = reply.headers["Set-Cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert TOKENS["team-a"].lower() not in cookie


def test_the_session_reads_and_writes_with_its_csrf_token(auth_server: ServerThread) -> None:
    http, csrf = login(auth_server, TOKENS["team-a"])
    assert http.get("/v1/session").body["csrf_token"] == csrf
    assert http.get("/v1/tasks").status == 200
    refused = http.post("/v1/tasks", {"type": "echo"})
    assert refused.status == 403
    assert refused.body["code"] == 7  # PERMISSION_DENIED
    assert "X-CSRF-Token" in refused.body["message"]
    forged = http.post("/v1/tasks", {"type": "echo"}, headers={"X-CSRF-Token": "0" * 64})
    assert forged.status == 403
    made = http.post("/v1/tasks", {"type": "echo"}, headers={"X-CSRF-Token": csrf})
    assert made.status == 200
    task_id = made.body["task"]["id"]
    # Its tasks are the tenant's, whichever way it authenticates.
    assert Http(auth_server, TOKENS["team-a"]).get(f"/v1/tasks/{task_id}").status == 200
    assert Http(auth_server, TOKENS["team-b"]).get(f"/v1/tasks/{task_id}").status == 404


def test_logout_clears_the_cookie_and_a_forged_one_is_refused(auth_server: ServerThread) -> None:
    http, _ = login(auth_server, TOKENS["team-b"])
    out = http.call("DELETE", "/v1/session")
    assert out.status == 200
    assert "conveyor_session=;" in out.headers["Set-Cookie"].replace('""', "")
    assert http.cookie is not None
    body, _, mac = http.cookie.rpartition(".")
    http.cookie = f"{body}.{'0' * len(mac)}"
    reply = http.get("/v1/tasks")
    assert reply.status == 401 and "log in again" in reply.body["message"]
    assert http.get("/v1/session").status == 401
    http.cookie = None
    assert "POST /v1/session" in http.get("/v1/session").body["message"]


def test_login_with_a_wrong_token_is_401(auth_server: ServerThread) -> None:
    http = Http(auth_server)
    wrong = http.post("/v1/session", {"token": "not-a-token-anyone-was-given"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    empty = http.post("/v1/session", {})
    assert empty.status == 400 and empty.body["details"][0]["field_violations"][0]["field"] == (
        "token"
    )


def test_without_auth_everything_is_open_and_login_says_so(server: ServerThread) -> None:
    http = Http(server)
    assert http.get("/v1/tasks").status == 200
    assert http.post("/v1/tasks", {"type": "echo"}).status == 200
    login_reply = http.post("/v1/session", {"token": TOKENS["team-a"]})
    assert login_reply.status == 400
    assert "authentication is off" in login_reply.body["message"]
