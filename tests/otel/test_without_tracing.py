"""Without the extra nothing changes: a submit runs, the caller's trace
context is kept, and the SDK never imports OpenTelemetry itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import ROOT
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# A server and a client in one process, on their own (tests.support pulls
# in redis, which loads OpenTelemetry by itself where it is installed).
PROGRAM = textwrap.dedent(
    """
    import asyncio, sys, threading

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    STORE, TRACEPARENT = sys.argv[1], sys.argv[2]
    sys.meta_path.insert(0, NotInstalled())

    from conveyor import Client
    from conveyor_server import ConveyorServer, HandlerRegistry, ServerConfig

    registry = HandlerRegistry()
    registry.task("echo")(lambda ctx, payload: payload)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    config = ServerConfig(host="127.0.0.1", port=0, http_port=-1, store=STORE)
    server = asyncio.run_coroutine_threadsafe(
        asyncio.sleep(0, ConveyorServer(config, registry)), loop
    ).result()
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        with Client(f"127.0.0.1:{port}", metadata=[("traceparent", TRACEPARENT)]) as client:
            task = client.submit("echo", {"n": 1}).wait(timeout=30)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(30)
    assert task.state.name == "SUCCEEDED", task
    assert task.raw.traceparent == TRACEPARENT, task.raw.traceparent
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """
)


CLIENT_ONLY = textwrap.dedent(
    """
    import sys

    from conveyor import AsyncClient, Client

    with Client(sys.argv[1]) as client:
        assert client.submit("echo", {"n": 1}).wait(timeout=30).state.name == "SUCCEEDED"
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """
)


def run(store_url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, store_url, TRACEPARENT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_the_extra_a_submit_runs_and_keeps_the_callers_trace_context(
    store_url: str,
) -> None:
    assert run(store_url) == "[]"


def test_an_sdk_process_that_does_not_trace_never_imports_it_even_when_installed(
    server: ServerThread,
) -> None:
    # The server's side cannot promise this: redis-py 8, which every server
    # imports, loads OpenTelemetry by itself wherever it is installed.
    __import__("opentelemetry.trace")  # installed here
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_ONLY, server.address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
