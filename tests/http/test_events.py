"""WatchTask as Server-Sent Events: each event's id the task's version, so a
reconnect with Last-Event-ID resumes without gaps or duplicates."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor import Client
from tests.support.http import Http, events
from tests.support.procs import wait_until
from tests.support.server import ServerThread


def watchers(thread: ServerThread) -> int:
    assert thread.server is not None and thread.server.servicer is not None
    return thread.server.servicer.watchers


def test_a_watch_streams_every_snapshot_until_the_terminal_one(server: ServerThread) -> None:
    http = Http(server)
    task = http.post(
        "/v1/tasks", {"type": "progress_steps", "payload": {"steps": 3, "interval": 0.05}}
    ).body["task"]
    response = http.open_events(f"/v1/tasks/{task['id']}:watch")
    assert response.headers["Content-Type"] == "text/event-stream"
    received = list(events(response))
    ids = [event_id for event_id, _ in received]
    assert ids == sorted(set(ids)) and ids[0] >= 1
    assert all(int(data["task"]["version"]) == event_id for event_id, data in received)
    last = received[-1][1]["task"]
    assert last["state"] == "TASK_STATE_SUCCEEDED" and last["result"] == 3
    assert http.get(f"/v1/tasks/{task['id']}").body["task"]["version"] == str(ids[-1])


def test_a_reconnect_with_last_event_id_resumes_without_gap_or_duplicate(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    http = Http(thread)
    task_id = http.post("/v1/tasks", {"type": "wait_for_cancel"}).body["task"]["id"]
    first = http.open_events(f"/v1/tasks/{task_id}:watch")
    seen = []
    for event_id, data in events(first):
        seen.append(event_id)
        if data["task"].get("progress", {}).get("message") == "started":
            break
    # The browser's connection drops; the server frees the stream's slot.
    first.close()
    wait_until(lambda: watchers(thread) == 0, 10, "the dropped stream closed")
    # Changes made while nobody watches.
    with Client(thread.address) as client:
        client.cancel(task_id)
        client.wait(task_id, timeout=10)
        expected = [t.raw.version for t in client.watch(task_id, since_version=seen[-1])]

    again = http.open_events(f"/v1/tasks/{task_id}:watch", headers={"Last-Event-ID": str(seen[-1])})
    resumed = list(events(again))
    resumed_ids = [event_id for event_id, _ in resumed]
    assert resumed_ids[0] > seen[-1]  # nothing seen twice
    assert resumed_ids == expected  # what a gRPC watch from there sends: no gap
    assert resumed[-1][1]["task"]["state"] == "TASK_STATE_CANCELLED"

    # Resumed after the terminal event: 204, which stops EventSource's retries.
    done = http.open_events(
        f"/v1/tasks/{task_id}:watch", headers={"Last-Event-ID": str(resumed_ids[-1])}
    )
    assert done.status == 204 and done.read() == b""
    # since_version in the query does the same as the header, for curl.
    from_query = http.open_events(f"/v1/tasks/{task_id}:watch?since_version={seen[-1]}")
    assert [event_id for event_id, _ in events(from_query)] == expected


def test_watch_refusals_are_status_json(make_server: Callable[..., ServerThread]) -> None:
    thread = make_server(max_watchers=1)
    http = Http(thread)
    missing = http.get("/v1/tasks/no-such-task:watch")
    assert missing.status == 404 and missing.body["code"] == 5
    task_id = http.post("/v1/tasks", {"type": "wait_for_cancel"}).body["task"]["id"]
    bad = http.get(f"/v1/tasks/{task_id}:watch", headers={"Last-Event-ID": "latest"})
    assert bad.status == 400 and "since_version" in bad.body["message"]
    ahead = http.get(f"/v1/tasks/{task_id}:watch?since_version=99")
    assert ahead.status == 400 and ahead.body["code"] == 11  # OUT_OF_RANGE
    negative = http.get(f"/v1/tasks/{task_id}:watch?since_version=-1")
    assert negative.status == 400 and negative.body["code"] == 3

    held = http.open_events(f"/v1/tasks/{task_id}:watch")
    next(events(held))
    full = http.get(f"/v1/tasks/{task_id}:watch")
    assert full.status == 429 and "--max-watchers" in full.body["message"]
    # gRPC and HTTP streams share the limit.
    with Client(thread.address) as client, pytest.raises(Exception, match="too many open"):
        next(iter(client.watch(task_id)))
    held.close()
    wait_until(lambda: watchers(thread) == 0, 10, "the stream closed")
    http.post(f"/v1/tasks/{task_id}:cancel")


def test_stopping_the_server_ends_open_event_streams(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    http = Http(thread)
    task_id = http.post("/v1/tasks", {"type": "wait_for_cancel"}).body["task"]["id"]
    stream = http.open_events(f"/v1/tasks/{task_id}:watch")
    next(events(stream))
    server = thread.server
    assert server is not None
    thread.call(lambda: server.stop(0.5))
    # The stream ends (the task went back to the queue, unfinished).
    list(events(stream))
