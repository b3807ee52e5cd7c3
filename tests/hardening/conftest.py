from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from conveyor_testing import ServerThread, test_config
from raw_api import Api

from conveyor_server import _runner


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    """A server of its own for each fuzz module: what one module submits,
    lists or cancels never meets another module's expectations. The queue
    is big enough that fuzzing never fills it by accident."""
    # Retry backoff jitter draws from the global `random`, which Hypothesis
    # seeds and watches while it generates data; a server thread drawing
    # from it meanwhile looks like a strategy using `random`.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_runner, "random", random.Random())
        thread = ServerThread(test_config(max_queue=1_000_000)).start()
        yield thread
        thread.stop()


@pytest.fixture(scope="module")
def fuzz_api(fuzz_server: ServerThread) -> Iterator[Api]:
    client = Api(fuzz_server.address)
    yield client
    client.close()
