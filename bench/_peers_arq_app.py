"""The arq side of bench/peers.py: worker settings and one no-op job.

Imported by the arq worker (`arq _peers_arq_app.WorkerSettings`) and by the
benchmark's client process; the Redis URL comes from BENCH_PEERS_REDIS_URL and
the number of concurrent jobs (N) from BENCH_PEERS_WORKERS.
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

POLL_DELAY_S = 0.01
"""How often the worker polls the queue and the client polls for a result.
arq's default, 0.5 s, would make every latency figure measure the polling."""


def redis_settings() -> RedisSettings:
    return RedisSettings.from_dsn(os.environ["BENCH_PEERS_REDIS_URL"])


async def noop(ctx: dict[str, Any], index: int) -> int:
    """Does nothing; returns its argument so that the client can check the result."""
    return index


class WorkerSettings:
    functions = [noop]  # noqa: RUF012 (arq reads class attributes)
    redis_settings = redis_settings()
    max_jobs = int(os.environ.get("BENCH_PEERS_WORKERS", "8"))
    poll_delay = POLL_DELAY_S
    max_tries = 1
