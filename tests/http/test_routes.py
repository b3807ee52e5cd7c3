"""Every route of the HTTP/JSON API against a real server, and that it
answers as the gRPC API does for the same tasks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from conveyor import Client
from tests.support.http import Http
from tests.support.procs import wait_until
from tests.support.server import ServerThread


def test_submit_then_get_returns_the_task_as_grpcurl_prints_it(server: ServerThread) -> None:
    http = Http(server)
    reply = http.post(
        "/v1/tasks",
        {"type": "echo", "payload": {"n": 1, "s": "x"}, "labels": {"team": "http"}},
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    task = reply.body["task"]
    assert task["state"] == "TASK_STATE_PENDING"
    assert task["labels"] == {"team": "http"}
    assert task["max_attempts"] == 1  # proto field names, not lowerCamelCase
    done = http.wait_state(task["id"], "TASK_STATE_SUCCEEDED")
    assert done["result"] == {"n": 1, "s": "x"}
    # The same task through gRPC.
    with Client(server.address) as client:
        assert client.get(task["id"]).raw.version == int(done["version"])


def test_batch_submit_returns_one_task_per_request_in_order(server: ServerThread) -> None:
    reply = Http(server).post(
        "/v1/tasks:batchSubmit",
        {"requests": [{"type": "echo", "payload": {"i": i}} for i in range(3)]},
    )
    assert reply.status == 200
    assert [t["payload"]["i"] for t in reply.body["tasks"]] == [0, 1, 2]


def test_batch_submit_with_partial_success_answers_each_request(server: ServerThread) -> None:
    reply = Http(server).post(
        "/v1/tasks:batchSubmit",
        {
            "partial_success": True,
            "requests": [
                {"type": "echo", "payload": {"i": 0}},
                {"type": "echo", "max_attempts": 1000},
                {"type": "echo", "payload": {"i": 2}},
            ],
        },
    )
    assert reply.status == 200
    assert "tasks" not in reply.body
    first, refused, third = reply.body["results"]
    assert (first["task"]["payload"], third["task"]["payload"]) == ({"i": 0}, {"i": 2})
    error = refused["error"]
    assert error["code"] == 3  # INVALID_ARGUMENT, as in google.rpc.Status
    assert "max_attempts" in error["message"]
    [detail] = error["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["field_violations"][0]["field"] == "max_attempts"
    assert Http(server).get(f"/v1/tasks/{third['task']['id']}").status == 200


def test_list_filters_by_state_type_and_label_and_pages(server: ServerThread) -> None:
    http = Http(server)
    label = f"list-{time.monotonic_ns()}"
    ids = [
        http.post("/v1/tasks", {"type": "echo", "labels": {"run": label}}).body["task"]["id"]
        for _ in range(3)
    ]
    failed = http.post("/v1/tasks", {"type": "fail", "labels": {"run": label}}).body["task"]
    http.wait_state(failed["id"], "TASK_STATE_FAILED")
    for task_id in ids:
        http.wait_state(task_id, "TASK_STATE_SUCCEEDED")

    first = http.get(f"/v1/tasks?labels=run={label}&type=echo&page_size=2")
    assert first.status == 200
    assert len(first.body["tasks"]) == 2
    token = first.body["next_page_token"]
    second = http.get(f"/v1/tasks?labels=run={label}&type=echo&page_size=2&page_token={token}")
    listed = [t["id"] for t in first.body["tasks"] + second.body["tasks"]]
    assert listed == ids[::-1]  # newest first
    assert "next_page_token" not in second.body

    only_failed = http.get(
        f"/v1/tasks?labels=run={label}&states=TASK_STATE_FAILED&states=TASK_STATE_CANCELLED"
    )
    assert [t["id"] for t in only_failed.body["tasks"]] == [failed["id"]]

    basic = http.get(f"/v1/tasks?labels=run={label}&type=echo&view=TASK_VIEW_BASIC")
    assert all("result" not in t and "payload" not in t for t in basic.body["tasks"])


def test_cancel_and_retry(server: ServerThread) -> None:
    http = Http(server)
    task = http.post("/v1/tasks", {"type": "wait_for_cancel", "payload": {"seconds": 30}}).body
    task_id = task["task"]["id"]
    http.wait_state(task_id, "TASK_STATE_RUNNING")
    assert http.post(f"/v1/tasks/{task_id}:cancel").status == 200
    http.wait_state(task_id, "TASK_STATE_CANCELLED")
    retried = http.post(f"/v1/tasks/{task_id}:retry")
    assert retried.status == 200
    assert retried.body["task"]["state"] == "TASK_STATE_PENDING"
    http.post(f"/v1/tasks/{task_id}:cancel")


def test_task_types_and_workers(server: ServerThread) -> None:
    http = Http(server)
    types = http.get("/v1/taskTypes")
    assert types.status == 200
    assert "echo" in [t["name"] for t in types.body["task_types"]]
    workers = http.get("/v1/workers")
    assert workers.status == 200
    assert workers.body["workers"][0]["threads"] == 8


def test_stats_count_by_state_and_type_and_show_throughput(
    make_server: Callable[..., ServerThread],
) -> None:
    thread = make_server()
    http = Http(thread)
    ids = [http.post("/v1/tasks", {"type": "echo"}).body["task"]["id"] for _ in range(3)]
    failed = http.post("/v1/tasks", {"type": "fail"}).body["task"]["id"]
    for task_id in ids:
        http.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    http.wait_state(failed, "TASK_STATE_FAILED")
    pending = http.post("/v1/tasks", {"type": "echo", "delay": "60s"}).body["task"]["id"]

    stats = http.get("/v1/stats").body
    assert stats["counts"]["TASK_STATE_SUCCEEDED"] == 3
    assert stats["counts"]["TASK_STATE_FAILED"] == 1
    assert stats["counts"]["TASK_STATE_PENDING"] == 1
    assert stats["types"]["echo"]["TASK_STATE_SUCCEEDED"] == 3
    assert stats["types"]["fail"]["TASK_STATE_FAILED"] == 1
    assert stats["queue_depth"] == 1
    assert stats["complete"] is True and stats["counted"] == 5
    throughput = stats["throughput"]
    assert throughput["bucket_seconds"] == 60
    assert len(throughput["finished"]) == 60
    assert sum(throughput["finished"]) == 4
    http.post(f"/v1/tasks/{pending}:cancel")
    assert sum(http.get("/v1/stats").body["throughput"]["finished"]) == 5


def test_http_port_minus_one_serves_no_http(make_server: Callable[..., ServerThread]) -> None:
    thread = make_server(http_port=-1)
    assert thread.server is not None
    assert thread.server.http is None and thread.server.http_port is None
    with Client(thread.address) as client:
        assert client.submit("echo", {}).id


def test_batch_cancel_and_retry_by_ids_and_by_filter(
    make_server: Callable[..., ServerThread],
) -> None:
    http = Http(make_server())
    label = {"run": "batch"}
    ids = [
        http.post("/v1/tasks", {"type": "echo", "delay": "3600s", "labels": label}).body["task"][
            "id"
        ]
        for _ in range(3)
    ]
    by_ids = http.post("/v1/tasks:batchCancel", {"ids": [ids[0], "no-such-task"]})
    assert by_ids.status == 200
    assert by_ids.body == {"matched": "1", "cancelled": "1", "not_found": "1"}
    by_filter = http.post("/v1/tasks:batchCancel", {"filter": {"labels": label}})
    assert by_filter.body == {"matched": "2", "cancelled": "2"}
    retried = http.post(
        "/v1/tasks:batchRetry", {"filter": {"labels": label, "states": ["TASK_STATE_CANCELLED"]}}
    )
    assert retried.body == {"matched": "3", "retried": "3"}
    for task_id in ids:
        http.wait_state(task_id, "TASK_STATE_SUCCEEDED")
    refused = http.post("/v1/tasks:batchRetry", {})
    assert refused.status == 400
    assert refused.body["details"][0]["field_violations"][0]["field"] == "ids"


def test_batch_cancel_is_scoped_to_the_callers_tenant(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "token-of-team-a-0123456789abcdef team-a\ntoken-of-team-b-0123456789abcdef team-b\n"
    )
    thread = make_server(auth_tokens_file=str(tokens))
    team_a = Http(thread, token="token-of-team-a-0123456789abcdef")
    team_b = Http(thread, token="token-of-team-b-0123456789abcdef")
    mine = team_a.post("/v1/tasks", {"type": "echo", "delay": "3600s"}).body["task"]["id"]
    theirs = team_b.post("/v1/tasks", {"type": "echo", "delay": "3600s"}).body["task"]["id"]
    assert team_a.post("/v1/tasks:batchCancel", {"ids": [mine, theirs]}).body == {
        "matched": "1",
        "cancelled": "1",
        "not_found": "1",
    }
    assert team_a.post("/v1/tasks:batchCancel", {"filter": {}}).body == {}
    assert team_b.get(f"/v1/tasks/{theirs}").body["task"]["state"] == "TASK_STATE_PENDING"


def test_task_type_limits_pause_and_resume(make_server: Callable[..., ServerThread]) -> None:
    http = Http(make_server())
    # The mask as the contract spells it, or in the JSON mapping's camelCase.
    for mask in (
        "max_running,max_starts_per_second",
        "maxRunning,maxStartsPerSecond",
        {"paths": ["max_running", "max_starts_per_second"]},
    ):
        reply = http.call(
            "PATCH",
            "/v1/taskTypes/echo",
            {"limits": {"max_running": 4, "max_starts_per_second": 2.5}, "update_mask": mask},
        )
        assert reply.status == 200, reply.body
        assert reply.body["task_type"]["limits"] == {"max_running": 4, "max_starts_per_second": 2.5}
    assert http.post("/v1/taskTypes/echo:pause").body["task_type"]["paused"] is True
    task = http.post("/v1/tasks", {"type": "echo"}).body["task"]
    waiting = http.get(f"/v1/tasks/{task['id']}").body["task"]
    assert waiting["pending_reason"] == "PENDING_REASON_TYPE_PAUSED"
    assert waiting["pending_message"] == "task type echo is paused"
    listed = {t["name"]: t for t in http.get("/v1/taskTypes").body["task_types"]}
    assert listed["echo"]["paused"] is True and listed["echo"]["pending"] == "1"
    assert "paused" not in http.post("/v1/taskTypes/echo:resume").body["task_type"]
    http.wait_state(task["id"], "TASK_STATE_SUCCEEDED")

    wrong_mask = http.call("PATCH", "/v1/taskTypes/echo", {"update_mask": "speed"})
    assert wrong_mask.status == 400
    assert wrong_mask.body["details"][0]["field_violations"][0]["field"] == "update_mask.paths[0]"
    two_names = http.call("PATCH", "/v1/taskTypes/echo", {"name": "other"})
    assert two_names.status == 400
    assert http.post("/v1/taskTypes/echo:stop").status == 404


def test_list_filters_by_creation_time(make_server: Callable[..., ServerThread]) -> None:
    http = Http(make_server())
    first = http.post("/v1/tasks", {"type": "echo"}).body["task"]
    # The second task must be created at a later time than the first.
    created = time.time()
    wait_until(lambda: time.time() > created + 0.002, 1, "the clock to move on")
    second = http.post("/v1/tasks", {"type": "echo"}).body["task"]
    after = http.get(f"/v1/tasks?created_after={second['create_time']}")
    assert [t["id"] for t in after.body["tasks"]] == [second["id"]]
    before = http.get(f"/v1/tasks?created_before={second['create_time']}")
    assert [t["id"] for t in before.body["tasks"]] == [first["id"]]
