"""The Dramatiq side of bench/peers.py: a Redis broker with the Results
middleware on a Redis backend, and one no-op actor that stores its result.

Imported by the Dramatiq worker (`dramatiq _peers_dramatiq_app ...`) and by the
benchmark's client process; the Redis URL comes from BENCH_PEERS_REDIS_URL.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

QUEUE = "bench_peers"

backend = RedisBackend(url=os.environ["BENCH_PEERS_REDIS_URL"])
broker = RedisBroker(url=os.environ["BENCH_PEERS_REDIS_URL"])
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
def noop(index: int) -> int:
    """Does nothing; returns its argument so that the client can check the result."""
    return index
