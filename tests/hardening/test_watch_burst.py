"""A burst of new watch streams: thousands opened at once all get their first
snapshot.

gRPC's server holds calls it has not yet handed to the application in a
backlog and, by default, refuses a growing share of them with CANCELLED past
1,000 and all past 3,000; a code no retry policy retries. The server lets the
backlog hold as many calls as it admits watch streams.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.fuzz import wait_until
from tests.support.raw_api import Api
from tests.support.server import ServerThread

pytestmark = pytest.mark.slow

BURST = 5000
CHANNELS = 10
CLIENT = Path(__file__).parents[1] / "support" / "watch_storm_client.py"


@pytest.mark.timeout(180)
def test_a_burst_of_watch_streams_all_open(
    make_server: Callable[..., ServerThread], request: pytest.FixtureRequest
) -> None:
    thread = make_server()
    api = Api(thread.address)
    request.addfinalizer(api.close)
    task = api.submit("wait_for_cancel", {"seconds": 3600})
    wait_until(lambda: api.get(task.id).progress.percent == 10, 20, "running")
    # The whole burst in one wave, from a process of its own.
    client = subprocess.Popen(
        [
            sys.executable,
            str(CLIENT),
            thread.address,
            task.id,
            str(CHANNELS),
            str(BURST),
            str(BURST),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdin is not None and client.stdout is not None
        for _ in range(2):
            started = time.monotonic()
            client.stdin.write("open\n")
            client.stdin.flush()
            answer = client.stdout.readline().strip()
            _, opened, error = answer.split(" ", 2)
            print(f"{opened} streams in {time.monotonic() - started:.1f}s")
            assert int(opened) == BURST, f"{opened} of {BURST} opened; first error: {error}"
            client.stdin.write("close\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "closed"
            wait_until(lambda: thread.server.servicer.watchers == 0, 60, "rid of the burst")  # type: ignore[union-attr]
    finally:
        if client.stdin is not None:
            client.stdin.close()
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait(10)
        if client.stdout is not None:
            client.stdout.close()
