"""WatchTasks as Server-Sent Events (GET /v1/tasks:watch): the changes of the
tasks a filter matches, each event's id the feed's cursor, so a reconnect
with Last-Event-ID continues without gaps or duplicates."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.client import HTTPResponse
from typing import Any

from tests.support.http import Http
from tests.support.procs import wait_until
from tests.support.server import ServerThread


def feed_events(response: HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """(cursor, data) of each event until the stream ends."""
    event_id = ""
    data: list[str] = []
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = "", []
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])


def collect(
    response: HTTPResponse, until: Callable[[list[dict[str, Any]]], bool]
) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    for event in feed_events(response):
        seen.append(event)
        if until([data for _, data in seen]):
            break
    response.close()
    return seen


def states_of(seen: list[tuple[str, dict[str, Any]]], task_id: str) -> list[str]:
    return [d["task"]["state"] for _, d in seen if d.get("task", {}).get("id") == task_id]


def test_changes_of_matching_tasks_stream_with_cursors(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    http = Http(thread)
    response = http.open_events("/v1/tasks:watch?type=echo&labels=team=a")
    assert response.headers["Content-Type"] == "text/event-stream"
    other = http.post("/v1/tasks", {"type": "echo", "labels": {"team": "b"}}).body["task"]
    task = http.post("/v1/tasks", {"type": "echo", "labels": {"team": "a"}}).body["task"]
    seen = collect(
        response,
        lambda datas: any(d.get("task", {}).get("state") == "TASK_STATE_SUCCEEDED" for d in datas),
    )
    assert all(d["task"]["id"] == task["id"] for _, d in seen), "only the matching task"
    assert other["id"] not in {d["task"]["id"] for _, d in seen}
    assert states_of(seen, task["id"])[-1] == "TASK_STATE_SUCCEEDED"
    cursors = [cursor for cursor, _ in seen]
    assert all(cursors) and len(set(cursors)) == len(cursors)
    assert all(d["cursor"] == cursor for cursor, d in seen)
    # The stream's headers carry the cursor it followed from: before every event.
    opened_at = response.headers["Conveyor-Cursor"]
    assert opened_at and opened_at not in cursors


def test_a_reconnect_with_last_event_id_continues_without_gap_or_duplicate(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    http = Http(thread)
    first = http.open_events("/v1/tasks:watch?type=wait_for_cancel")
    task_id = http.post("/v1/tasks", {"type": "wait_for_cancel"}).body["task"]["id"]
    before = collect(
        first,
        lambda datas: any(d["task"].get("progress", {}).get("message") == "started" for d in datas),
    )
    wait_until(lambda: thread.server.servicer.watchers == 0, 10, "the dropped stream closed")  # type: ignore[union-attr]
    # Changes made while nobody watches.
    http.post(f"/v1/tasks/{task_id}:cancel")
    http.wait_state(task_id, "TASK_STATE_CANCELLED")
    again = http.open_events(
        "/v1/tasks:watch?type=wait_for_cancel", headers={"Last-Event-ID": before[-1][0]}
    )
    after = collect(
        again, lambda datas: any(d["task"]["state"] == "TASK_STATE_CANCELLED" for d in datas)
    )
    versions = [int(d["task"]["version"]) for _, d in before + after]
    assert versions == sorted(set(versions)), "no gap replayed twice, none lost"
    assert not any(d.get("reset") for _, d in after)
    final = http.get(f"/v1/tasks/{task_id}").body["task"]
    assert int(final["version"]) == versions[-1]


def test_a_cursor_the_feed_cannot_continue_from_is_a_reset(server: ServerThread) -> None:
    response = Http(server).open_events(
        "/v1/tasks:watch?type=echo", headers={"Last-Event-ID": "not-a-cursor-of-this-feed"}
    )
    [(cursor, data)] = collect(response, lambda datas: True)
    assert data.get("reset") is True and cursor == data["cursor"]


def test_current_ids_send_the_snapshots_of_finished_tasks_first(server: ServerThread) -> None:
    http = Http(server)
    task = http.post("/v1/tasks", {"type": "echo"}).body["task"]
    http.wait_state(task["id"], "TASK_STATE_SUCCEEDED")
    query = f"ids={task['id']}&current_ids={task['id']}"
    [(_, data)] = collect(http.open_events(f"/v1/tasks:watch?{query}"), lambda datas: True)
    assert (data["task"]["id"], data["task"]["state"], data["current"]) == (
        task["id"],
        "TASK_STATE_SUCCEEDED",
        True,
    )
    missing = http.get("/v1/tasks:watch?ids=no-such-task&current_ids=no-such-task")
    assert missing.status == 404
    assert missing.body["details"][0]["resource_name"] == "no-such-task"


def test_bad_parameters_are_400_with_the_parameter_named(server: ServerThread) -> None:
    http = Http(server)
    unknown = http.get("/v1/tasks:watch?colour=red")
    assert unknown.status == 400
    assert unknown.body["details"][0]["field_violations"][0]["field"] == "colour"
    state = http.get("/v1/tasks:watch?states=TASK_STATE_BORED")
    assert state.status == 400


def test_tenants_see_only_their_own_changes(
    make_server: Callable[..., ServerThread], tmp_path: Any
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token-0123456789 acme\nbob-token-0123456789 globex\n")
    thread = make_server(auth_tokens_file=str(tokens))
    alice, bob = (
        Http(thread, token="alice-token-0123456789"),
        Http(thread, token="bob-token-0123456789"),
    )
    watching = bob.open_events("/v1/tasks:watch?type=echo")
    results: list[tuple[str, dict[str, Any]]] = []
    reader = threading.Thread(
        target=lambda: results.extend(
            collect(
                watching, lambda datas: any(d["task"]["labels"].get("who") == "bob" for d in datas)
            )
        )
    )
    reader.start()
    alice.post("/v1/tasks", {"type": "echo", "labels": {"who": "alice"}})
    bob.post("/v1/tasks", {"type": "echo", "labels": {"who": "bob"}})
    reader.join(10)
    assert results, "bob saw his own task"
    assert all(d["task"]["labels"]["who"] == "bob" for _, d in results)


def test_reply_to_follows_the_tasks_posted_with_it_in_the_tenant_only(
    make_server: Callable[..., ServerThread], tmp_path: Any
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-token-0123456789 acme\nbob-token-0123456789 globex\n")
    thread = make_server(auth_tokens_file=str(tokens))
    alice, bob = (
        Http(thread, token="alice-token-0123456789"),
        Http(thread, token="bob-token-0123456789"),
    )
    # The same name in two tenants, and another name in bob's.
    watching = bob.open_events("/v1/tasks:watch?reply_to=client-1&states=TASK_STATE_SUCCEEDED")
    for http, who, name in ((alice, "alice", "client-1"), (bob, "bob", "client-2")):
        task = http.post(
            "/v1/tasks", {"type": "echo", "labels": {"who": who}, "reply_to": name}
        ).body["task"]
        assert task["reply_to"] == name
        http.wait_state(task["id"], "TASK_STATE_SUCCEEDED")
    mine = bob.post("/v1/tasks", {"type": "echo", "reply_to": "client-1"}).body["task"]
    [(_, data)] = collect(watching, lambda datas: True)
    assert (data["task"]["id"], data["task"]["reply_to"]) == (mine["id"], "client-1")
    refused = bob.get("/v1/tasks:watch?reply_to=client-1&include_current=true")
    assert refused.status == 400
    assert refused.body["details"][0]["field_violations"][0]["field"] == "include_current"
