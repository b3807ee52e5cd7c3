"""Metadata that is not UTF-8, sent by any caller, before authentication.

gRPC's Python server decodes each metadata value as UTF-8 and, when that
fails, logs an ERROR with a traceback and reads the value as Latin-1. A
caller sending such a header on every call could fill the server's log.
The SDK and grpcio refuse to send one, so curl speaks HTTP/2 here.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._grpc_logs import UndecodableMetadataFilter
from tests.support.raw_api import Api
from tests.support.server import ServerThread

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="needs curl, built with HTTP/2")

CALLS = 5


def grpc_over_curl(
    address: str, method: str, request: bytes, headers: list[bytes], tmp_path: Path
) -> tuple[dict[str, str], bytes]:
    """One unary call; returns the response headers and trailers, and the
    response message (empty when there is none)."""
    assert CURL is not None
    body = tmp_path / "request"
    body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
    out = tmp_path / "response"
    command: list[str | bytes] = [CURL, "-sS", "--http2-prior-knowledge", "-o", str(out), "-D", "-"]
    command += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    for header in headers:
        command += ["-H", header]
    command += ["--data-binary", f"@{body}", f"http://{address}/conveyor.v1.TaskService/{method}"]
    done = subprocess.run(command, capture_output=True, timeout=30, check=True)
    fields: dict[str, str] = {}
    for line in done.stdout.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    data = out.read_bytes()
    return fields, data[5:]


def grpc_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """gRPC's own lines of WARNING and above, and any traceback."""
    return [
        r
        for r in caplog.records
        if r.exc_info or (r.name.startswith("grpc") and r.levelno >= logging.WARNING)
    ]


def test_latin1_metadata_is_served_without_a_traceback_per_call(
    make_server: type[ServerThread], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    thread = make_server()
    api = Api(thread.address)
    try:
        task = api.submit("echo", {})
    finally:
        api.close()
    request = pb.GetTaskRequest(id=task.id).SerializeToString()
    caplog.set_level(logging.DEBUG)
    for _ in range(CALLS):
        fields, message = grpc_over_curl(
            thread.address, "GetTask", request, [b"x-name: caf\xe9"], tmp_path
        )
        assert fields.get("grpc-status") == "0", fields
        assert pb.GetTaskResponse.FromString(message).task.id == task.id
    assert grpc_records(caplog) == []
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == []
    # One warning at most says it happened; not one per call.
    notes = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(notes) <= 1


def test_latin1_metadata_without_a_token_is_unauthenticated_quietly(
    auth_server: ServerThread, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    request = pb.GetTaskRequest(id="any").SerializeToString()
    caplog.set_level(logging.DEBUG)
    for _ in range(CALLS):
        fields, message = grpc_over_curl(
            auth_server.address, "GetTask", request, [b"x-name: caf\xe9"], tmp_path
        )
        assert fields.get("grpc-status") == "16", fields  # UNAUTHENTICATED
        assert message == b""
    assert grpc_records(caplog) == []
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_warning_comes_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    quiet = UndecodableMetadataFilter(clock=lambda: now[0])
    grpc_logger = logging.getLogger("grpc._cython.cygrpc")

    def undecodable() -> bool:
        record = grpc_logger.makeRecord(
            grpc_logger.name, logging.ERROR, __file__, 1, "Invalid encoding on %s", (b"\xe9",), None
        )
        return quiet.filter(record)

    caplog.set_level(logging.WARNING)
    assert [undecodable() for _ in range(3)] == [False] * 3
    now[0] += 61
    assert undecodable() is False
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 2, notes
    assert "not UTF-8" in notes[0] and "1 call" in notes[0]
    assert "3 calls" in notes[1]
    other = grpc_logger.makeRecord(grpc_logger.name, logging.ERROR, __file__, 1, "other", (), None)
    assert quiet.filter(other) is True
