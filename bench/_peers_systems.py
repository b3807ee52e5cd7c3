"""The systems bench/peers.py compares: how each one's workers are started.

Every system is one entry of SYSTEMS: a start function that launches its
server and worker processes (through `Processes`, so they are always stopped)
and returns what the client process needs to reach it. No peer library is
imported here; the workers import them in their own processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _peers_processes import Processes, free_port, wait_serving

BENCH = Path(__file__).resolve().parent
SERVER_BIN = Path(sys.executable).with_name("conveyor-server")
INSTALL_HINT = "pip install -e '.[bench]'"
QUEUE = "bench_peers"


class RedisDb:
    """The one database every system shares; emptied between systems."""

    def __init__(self, host: str, port: int, db: int) -> None:
        import redis

        self.url = f"redis://{host}:{port}/{db}"
        self.db = db
        self.client = redis.Redis(host=host, port=port, db=db, socket_timeout=10)

    def facts(self) -> dict[str, Any]:
        info = self.client.info("server")
        config = self.client.config_get("save") | self.client.config_get("appendonly")
        return {
            "version": info.get("redis_version"),
            "db": self.db,
            "save": config.get("save"),
            "appendonly": config.get("appendonly"),
        }

    def keys(self) -> int:
        return int(self.client.dbsize())

    def flush(self) -> None:
        # FLUSHDB empties this database only, never the others.
        self.client.flushdb()


@dataclass
class Context:
    processes: Processes
    redis: RedisDb
    tmp: Path
    workers: int
    """N: worker threads of every pool."""
    startup_timeout: float

    def peer_env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "BENCH_PEERS_REDIS_URL": self.redis.url,
            "BENCH_PEERS_WORKERS": str(self.workers),
            "PYTHONPATH": path,
        }


@dataclass(frozen=True)
class System:
    key: str
    label: str
    client: str
    """Adapter in _peers_adapters.py."""
    needs: tuple[str, ...]
    """Modules the system needs, checked before anything starts."""
    setup: str
    """How it runs, for the report; {n} is the worker thread count."""
    start: Callable[[Context, str], dict[str, Any]]
    """Starts the workers; returns the client's extra arguments."""
    bulk: bool = False
    """Also runs the bulk phase (`submit_batch`)."""
    optional: str = ""
    """Not in the `bench` extra: how to install it; the row is left out without it."""

    @property
    def uses_redis(self) -> bool:
        return "redis" in self.needs


# ---------------------------------------------------------------------------
# Conveyor


def conveyor_server(ctx: Context, name: str, store: str, workers: int) -> str:
    if not SERVER_BIN.exists():
        raise RuntimeError(f"{SERVER_BIN.name} is missing next to the interpreter; {INSTALL_HINT}")
    port = free_port()
    cmd = [
        str(SERVER_BIN),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--store", store, "--workers", str(workers), "--log-level", "WARNING"),
        # The HTTP face is not compared, and its fixed default port may be taken.
        *("--http-port", "-1"),
    ]
    process = ctx.processes.start(name, cmd)
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(process, address, ctx.startup_timeout)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}: {ctx.processes.log_of(process)}") from None
    return address


def start_conveyor_memory(ctx: Context, key: str) -> dict[str, Any]:
    return {"address": conveyor_server(ctx, key, "memory://", ctx.workers)}


def start_conveyor_sqlite(ctx: Context, key: str) -> dict[str, Any]:
    # An absolute path gives the four slashes of sqlite:////abs/path.db.
    store = f"sqlite:///{ctx.tmp / 'tasks.db'}"
    return {"address": conveyor_server(ctx, key, store, ctx.workers)}


def start_conveyor_redis(ctx: Context, key: str) -> dict[str, Any]:
    """An API-only server and one worker process."""
    store = f"{ctx.redis.url}?prefix=bench"
    address = conveyor_server(ctx, f"{key}-api", store, 0)
    cmd = [str(SERVER_BIN), "worker", "--store", store, "--workers", str(ctx.workers)]
    ctx.processes.start(f"{key}-worker", [*cmd, "--log-level", "WARNING"])
    return {"address": address}


# ---------------------------------------------------------------------------
# Peers


def start_celery(ctx: Context, key: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "celery", "-A", "_peers_celery_app", "worker"]
    cmd += ["--pool", "threads", "--concurrency", str(ctx.workers), "--loglevel", "WARNING"]
    cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    cmd += ["--hostname", f"{QUEUE}@%h", "--queues", QUEUE]
    ctx.processes.start(key, cmd, env=ctx.peer_env(), cwd=BENCH)
    return {}


def start_rq(ctx: Context, key: str) -> dict[str, Any]:
    """N worker processes: a SimpleWorker runs one job at a time."""
    cmd = [sys.executable, "-m", "rq.cli", "worker"]
    cmd += ["--worker-class", "rq.worker.SimpleWorker", "--url", ctx.redis.url]
    cmd += ["--logging_level", "WARNING", "--path", str(BENCH), QUEUE]
    for number in range(1, ctx.workers + 1):
        ctx.processes.start(f"{key}-{number}", cmd, env=ctx.peer_env())
    return {}


def start_dramatiq(ctx: Context, key: str) -> dict[str, Any]:
    # Dramatiq's default process count (one per core): no --processes.
    cmd = [sys.executable, "-m", "dramatiq", "_peers_dramatiq_app"]
    cmd += ["--threads", str(ctx.workers), "--queues", QUEUE, "--path", str(BENCH)]
    ctx.processes.start(key, cmd, env=ctx.peer_env(), cwd=BENCH)
    return {}


def start_arq(ctx: Context, key: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "arq", "_peers_arq_app.WorkerSettings"]
    ctx.processes.start(key, cmd, env=ctx.peer_env(), cwd=BENCH)
    return {}


CONVEYOR = ("conveyor", "conveyor_server", "grpc_health")

SYSTEMS = (
    System(
        "conveyor-memory",
        "Conveyor memory, sync `Client`",
        "conveyor",
        CONVEYOR,
        "one `conveyor-server --store memory:// --workers {n} --http-port -1` process (every "
        "Conveyor server here runs without its HTTP face)",
        start_conveyor_memory,
        bulk=True,
    ),
    System(
        "conveyor-memory-async",
        "Conveyor memory, `AsyncClient`",
        "conveyor-async",
        CONVEYOR,
        "the same server; the client drives it with `AsyncClient` from coroutines on one "
        "event loop",
        start_conveyor_memory,
    ),
    System(
        "conveyor-sqlite",
        "Conveyor SQLite",
        "conveyor",
        CONVEYOR,
        "one `conveyor-server --store sqlite:///<tmp>/tasks.db --workers {n}` process, "
        "on a fresh database file with the store's default `synchronous=full` (every "
        "commit synced to disk)",
        start_conveyor_sqlite,
    ),
    System(
        "conveyor-redis",
        "Conveyor Redis (API + 1 worker)",
        "conveyor",
        (*CONVEYOR, "redis"),
        "`conveyor-server --store redis://.../15?prefix=bench --workers 0` (API only) plus "
        "one `conveyor-server worker --store redis://... --workers {n}` process",
        start_conveyor_redis,
        bulk=True,
    ),
    System(
        "dramatiq",
        "Dramatiq",
        "dramatiq",
        ("dramatiq", "redis"),
        "`dramatiq --threads {n}` at its default process count (one per core), Redis "
        "broker, Results middleware with the Redis backend, `store_results=True`, retries "
        "off, the other default middleware on",
        start_dramatiq,
    ),
    System(
        "celery",
        "Celery (threads)",
        "celery",
        ("celery", "kombu", "redis"),
        "`celery worker --pool threads --concurrency {n} --without-gossip --without-mingle "
        "--without-heartbeat`, Redis broker and Redis result backend, prefetch multiplier 4, "
        "early acks (the default), rate limits off, JSON",
        start_celery,
    ),
    System(
        "rq",
        "RQ ({n} SimpleWorkers)",
        "rq",
        ("rq", "redis"),
        "{n} `rq worker --worker-class rq.worker.SimpleWorker` processes: each runs jobs in "
        "its own process, one at a time (RQ has no thread pool); results kept with the "
        "default result_ttl",
        start_rq,
    ),
    System(
        "arq",
        "arq",
        "arq",
        ("arq", "redis"),
        "one `arq` worker process with `max_jobs={n}` and `poll_delay=0.01` s (the default "
        "0.5 s would dominate every figure); the client waits with `Job.result(poll_delay=0.01)`",
        start_arq,
        # arq requires redis-py < 6, which the rest of the benchmark must not run
        # on (Conveyor's Redis store needs the current one); arq itself runs on it.
        optional="pip install --no-deps arq",
    ),
)
BY_KEY = {system.key: system for system in SYSTEMS}
