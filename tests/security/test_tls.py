"""TLS and mutual TLS: the server's settings, the SDK's `tls()`, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor import AsyncClient, Client, TaskState, Unavailable, tls
from conveyor_server import ConveyorServer, ServerConfig
from conveyor_server._main import config_from_args
from tests.support.server import ServerThread

MakeServer = Callable[..., ServerThread]


def test_sdk_submits_and_waits_over_tls(
    make_server: MakeServer, tls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**tls_settings)

    with Client(server.address, credentials=tls(pki.ca), timeout=5) as client:
        task = client.submit("echo", {"over": "tls"}).wait(timeout=10)

    assert task.state is TaskState.SUCCEEDED
    assert task.result == {"over": "tls"}


def test_server_name_localhost_matches_the_certificate(
    make_server: MakeServer, tls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**tls_settings)

    with Client(f"localhost:{server.server.port}", credentials=tls(pki.ca)) as client:
        assert client.submit("echo", {}).wait(timeout=10).state is TaskState.SUCCEEDED


def test_a_server_name_override_picks_the_name_to_verify(
    make_server: MakeServer, tls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**tls_settings)

    for name, works in (("localhost", True), ("conveyor.example", False)):
        options = [("grpc.ssl_target_name_override", name)]
        with Client(server.address, credentials=tls(pki.ca), options=options) as client:
            if works:
                assert client.submit("echo", {}).wait(timeout=10).state is TaskState.SUCCEEDED
            else:
                with pytest.raises(Unavailable):
                    client.get("some-id", rpc_timeout=2)


async def test_async_client_watches_over_tls(
    make_server: MakeServer, tls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**tls_settings)

    async with AsyncClient(server.address, credentials=tls(pki.ca.read_bytes())) as client:
        handle = await client.submit("progress_steps", {"steps": 3})
        states = [task.state async for task in handle.watch()]

    assert states[-1] is TaskState.SUCCEEDED


def test_plaintext_client_is_refused_by_a_tls_server(
    make_server: MakeServer, tls_settings: dict[str, str]
) -> None:
    server = make_server(**tls_settings)

    with Client(server.address) as client, pytest.raises(Unavailable):
        client.get("some-id", rpc_timeout=2)


def test_client_that_does_not_trust_the_ca_is_refused(
    make_server: MakeServer, tls_settings: dict[str, str]
) -> None:
    server = make_server(**tls_settings)

    # The system's roots did not sign the test server's certificate.
    with Client(server.address, credentials=tls()) as client, pytest.raises(Unavailable):
        client.get("some-id", rpc_timeout=2)


def test_mtls_accepts_a_client_certificate_of_its_ca(
    make_server: MakeServer, mtls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**mtls_settings)
    credentials = tls(pki.ca, cert=pki.client_cert, key=pki.client_key)

    with Client(server.address, credentials=credentials) as client:
        assert client.submit("echo", {}).wait(timeout=10).state is TaskState.SUCCEEDED


def test_mtls_refuses_a_client_without_a_certificate(
    make_server: MakeServer, mtls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**mtls_settings)

    with Client(server.address, credentials=tls(pki.ca)) as client, pytest.raises(Unavailable):
        client.submit("echo", {}, rpc_timeout=2)


def test_mtls_refuses_a_certificate_from_another_ca(
    make_server: MakeServer, mtls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**mtls_settings)
    credentials = tls(pki.ca, cert=pki.stranger_cert, key=pki.stranger_key)

    with Client(server.address, credentials=credentials) as client, pytest.raises(Unavailable):
        client.submit("echo", {}, rpc_timeout=2)


def test_mtls_refuses_health_checks_without_a_certificate(
    make_server: MakeServer, mtls_settings: dict[str, str], pki: Any
) -> None:
    server = make_server(**mtls_settings)
    good = tls(pki.ca, cert=pki.client_cert, key=pki.client_key)

    with grpc.secure_channel(server.address, good) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.secure_channel(server.address, tls(pki.ca)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


# --- the SDK helper ---------------------------------------------------------------


def test_tls_wants_cert_and_key_together(pki: Any) -> None:
    with pytest.raises(ValueError, match="cert and key go together"):
        tls(pki.ca, cert=pki.client_cert)
    with pytest.raises(ValueError, match="cert and key go together"):
        tls(pki.ca, key=pki.client_key)


def test_tls_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=r"cannot read the CA file .*nope\.pem"):
        tls(missing)


# --- server settings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "a.pem"}, "tls_cert and tls_key go together"),
        ({"tls_key": "a.key"}, "tls_cert and tls_key go together"),
        ({"tls_client_ca": "ca.pem"}, "tls_client_ca needs tls_cert and tls_key"),
    ],
)
def test_incomplete_tls_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**settings)


def test_tls_settings_come_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_TLS_CLIENT_CA", "ca.pem")
    config = config_from_args(["--tls-cert", "server.pem", "--tls-key", "server.key"])
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (
        "server.pem",
        "server.key",
        "ca.pem",
    )


def test_an_unreadable_certificate_stops_the_server_at_once(pki: Any, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    config = ServerConfig(port=0, tls_cert=str(missing), tls_key=str(pki.server_key))

    with pytest.raises(ValueError, match=r"cannot read --tls-cert file .*missing\.pem"):
        ConveyorServer(config)


def test_a_file_without_pem_is_refused(pki: Any, tmp_path: Path) -> None:
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("hello")
    config = ServerConfig(port=0, tls_cert=str(pki.server_cert), tls_key=str(not_pem))

    with pytest.raises(ValueError, match="holds no PEM PRIVATE KEY"):
        ConveyorServer(config)


def test_conveyor_server_reports_an_unreadable_file_and_exits_2(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    env = {**os.environ, "CONVEYOR_TLS_KEY": missing}

    done = subprocess.run(
        [sys.executable, "-m", "conveyor_server", "--port", "0", "--tls-cert", missing],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "cannot read --tls-cert file" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
