"""A small HTTP client for the HTTP/JSON API tests, on the standard library."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPResponse
from typing import Any

from tests.support.server import ServerThread


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any = field(repr=False)


class Http:
    """Calls one server's HTTP API; `token` becomes a bearer header, and a
    session cookie it is given is sent back."""

    def __init__(self, server: ServerThread, token: str | None = None) -> None:
        assert server.server is not None and server.server.http_port is not None
        self.base = f"http://127.0.0.1:{server.server.http_port}"
        self.token = token
        self.cookie: str | None = None

    def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> urllib.request.Request:
        sent = {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        if self.cookie is not None:
            sent["Cookie"] = self.cookie
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        return urllib.request.Request(self.base + path, data=data, method=method, headers=sent)

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        try:
            with urllib.request.urlopen(
                self._request(method, path, body, headers), timeout=10
            ) as r:
                raw = r.read()
                return Reply(r.status, json.loads(raw) if raw else None, r.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return Reply(exc.code, json.loads(raw) if raw else None, exc.headers)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.call("POST", path, body, **kwargs)

    def wait_state(self, task_id: str, state: str, timeout: float = 10) -> dict[str, Any]:
        """The task once it is in `state`; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task: dict[str, Any] = self.get(f"/v1/tasks/{task_id}").body["task"]
            if task["state"] == state or time.monotonic() > deadline:
                assert task["state"] == state, task
                return task
            time.sleep(0.02)

    def open_events(self, path: str, headers: dict[str, str] | None = None) -> HTTPResponse:
        """An event stream's response; HTTPError for a refusal."""
        response = urllib.request.urlopen(self._request("GET", path, None, headers), timeout=10)
        assert isinstance(response, HTTPResponse)
        return response


def events(response: HTTPResponse) -> Iterator[tuple[int, dict[str, Any]]]:
    """(id, data) of each Server-Sent Event until the stream ends."""
    event_id: int | None = None
    data: list[str] = []
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                assert event_id is not None
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data.append(line[6:])
