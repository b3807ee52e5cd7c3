from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest

from conveyor_server import _attempts
from conveyor_server.stores.redis import _feed_stream, _follower, _leases
from tests.support.raw_api import Api
from tests.support.server import ServerThread, drop_redis_prefix, test_config


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A server of its own for each fuzz module and store: what one module
    submits, lists or cancels never meets another module's expectations.
    The queue is big enough that fuzzing never fills it by accident.

    Every case runs on the memory store; a tenth of them (`scaled`) on
    SQLite and Redis, whose answers must be the same."""
    url = "memory://"
    prefix = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/tasks.db"
    elif request.param == "redis":
        host, port = request.getfixturevalue("redis_server")
        prefix = f"conveyor-fuzz-{uuid.uuid4().hex[:12]}"
        url = f"redis://{host}:{port}/0?prefix={prefix}"
    # Retry backoff and reaping jitter draw from the global `random`, which
    # Hypothesis seeds and watches while it generates data; a server thread
    # drawing from it meanwhile looks like a strategy using `random`.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_attempts, "random", random.Random())
        patch.setattr(_leases, "random", random.Random())
        patch.setattr(_follower, "random", random.Random())
        patch.setattr(_feed_stream, "random", random.Random())
        thread = ServerThread(test_config(max_queue=1_000_000, store=url)).start()
        thread.fuzz_scale = 1.0 if request.param == "memory" else 0.1  # type: ignore[attr-defined]
        yield thread
        thread.stop()
    if prefix is not None:
        drop_redis_prefix(*request.getfixturevalue("redis_server"), prefix)


@pytest.fixture(scope="module")
def fuzz_api(fuzz_server: ServerThread) -> Iterator[Api]:
    client = Api(fuzz_server.address)
    yield client
    client.close()
