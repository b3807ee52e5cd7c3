"""grpcurl against a server with mutual TLS and tokens, as the README shows it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.support.server import ServerThread, grpcurl_path

pytestmark = pytest.mark.slow

GRPCURL = grpcurl_path()


def grpcurl(
    server: ServerThread,
    pki: Any,
    *words: str,
    token: str | None = None,
    data: Any = None,
    client_cert: bool = True,
) -> subprocess.CompletedProcess[str]:
    cmd = [GRPCURL, "-cacert", str(pki.ca)]
    if client_cert:
        cmd += ["-cert", str(pki.client_cert), "-key", str(pki.client_key)]
    if token is not None:
        cmd += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [server.address, *words]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def test_lists_services_without_a_token(secure_server: ServerThread, pki: Any) -> None:
    done = grpcurl(secure_server, pki, "list")

    assert done.returncode == 0, done.stderr
    assert "conveyor.v1.TaskService" in done.stdout.split()


def test_health_check_without_a_token(secure_server: ServerThread, pki: Any) -> None:
    done = grpcurl(
        secure_server,
        pki,
        "grpc.health.v1.Health/Check",
        data={"service": "conveyor.v1.TaskService"},
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "SERVING"}


def test_submit_and_get_with_a_token(
    secure_server: ServerThread, pki: Any, tokens: dict[str, str]
) -> None:
    submitted = grpcurl(
        secure_server,
        pki,
        "conveyor.v1.TaskService/SubmitTask",
        token=tokens["team-a"],
        data={"type": "echo", "payload": {"via": "grpcurl"}},
    )
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)["task"]
    assert task["payload"] == {"via": "grpcurl"}

    got = grpcurl(
        secure_server,
        pki,
        "conveyor.v1.TaskService/GetTask",
        token=tokens["team-a"],
        data={"id": task["id"]},
    )
    assert got.returncode == 0, got.stderr
    other = grpcurl(
        secure_server,
        pki,
        "conveyor.v1.TaskService/GetTask",
        token=tokens["team-b"],
        data={"id": task["id"]},
    )
    assert other.returncode != 0
    assert "Code: NotFound" in other.stderr


def test_submit_without_a_token_says_what_to_send(secure_server: ServerThread, pki: Any) -> None:
    done = grpcurl(secure_server, pki, "conveyor.v1.TaskService/SubmitTask", data={"type": "echo"})

    assert done.returncode != 0
    assert "Code: Unauthenticated" in done.stderr
    assert "authorization: Bearer <token>" in done.stderr


def test_no_client_certificate_no_connection(secure_server: ServerThread, pki: Any) -> None:
    done = grpcurl(secure_server, pki, "list", client_cert=False)

    assert done.returncode != 0
    assert "conveyor.v1.TaskService" not in done.stdout
