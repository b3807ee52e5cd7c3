"""The RQ side of bench/peers.py: the no-op job function.

RQ imports it by name in the worker (`rq worker ...` with this directory on the
import path), so it lives in a module of its own and needs no RQ import.
"""

from __future__ import annotations

QUEUE = "bench_peers"


def noop(index: int) -> int:
    """Does nothing; returns its argument so that the client can check the result."""
    return index
