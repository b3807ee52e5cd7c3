"""The Celery side of bench/peers.py: one app and one no-op task.

Imported by the Celery worker (`celery -A _peers_celery_app worker ...`) and by
the benchmark's client process; the Redis URL comes from BENCH_PEERS_REDIS_URL.
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = "bench_peers"

app = Celery(
    "bench_peers",
    broker=os.environ["BENCH_PEERS_REDIS_URL"],
    backend=os.environ["BENCH_PEERS_REDIS_URL"],
)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Celery's defaults, spelled out: early acks, results kept for a day.
    task_acks_late=False,
    task_ignore_result=False,
    # Each of the N threads may reserve 4 messages (the default); 16 measured
    # no faster for these no-op tasks.
    worker_prefetch_multiplier=4,
    # No rate limits are used, so skip their bookkeeping (a documented
    # throughput setting).
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(index: int) -> int:
    """Does nothing; returns its argument so that the client can check the result."""
    return index
