"""The HTTP/JSON API serves HTTPS with the gRPC certificate, and marks the
session cookie Secure."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.security.conftest import TOKENS, Pki
from tests.support.server import ServerThread


def _https(thread: ServerThread, path: str, context: ssl.SSLContext, **kwargs: object) -> object:
    assert thread.server is not None
    request = urllib.request.Request(
        f"https://localhost:{thread.server.http_port}{path}",
        **kwargs,  # type: ignore[arg-type]
    )
    return urllib.request.urlopen(request, context=context, timeout=10)


def test_https_with_the_server_certificate_and_a_secure_cookie(
    make_server: Callable[..., ServerThread], pki: Pki, tokens_file: Path
) -> None:
    thread = make_server(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        auth_tokens_file=str(tokens_file),
    )
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    with _https(
        thread,
        "/v1/taskTypes",
        trusted,
        headers={"Authorization": f"Bearer {TOKENS['team-a']}"},
    ) as response:  # type: ignore[attr-defined]
        assert "task_types" in json.loads(response.read())
    with _https(
        thread,
        "/v1/session",
        trusted,
        method="POST",
        data=json.dumps({"token": TOKENS["team-a"]}).encode(),
        headers={"Content-Type": "application/json"},
    ) as response:  # type: ignore[attr-defined]
        assert "secure" in response.headers["Set-Cookie"].lower()
    # Plaintext is not served on the port.
    assert thread.server is not None
    plain = f"http://localhost:{thread.server.http_port}/v1/taskTypes"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(plain, timeout=5)
