"""What limits and fair turns cost the claim path of each store.

Measures the stores directly (no gRPC, no handler threads), in one run, two
workloads side by side on each store (alternating, each `--repeat` times on
a fresh store):

  off  one tenant, no concurrency key, no limits: the claim path as it was
       before limits (one FIFO in turn).
  on   TENANTS tenants with KEYS concurrency keys each, tasks spread over
       them in turn, and every limit set (max_running, max_running_per_key,
       max_starts_per_second with its bucket) high enough never to bind: the
       whole path runs (rotations of tenants and keys, counts, bucket).

Each creates TASKS tasks (not timed), then runs rounds as a runner with 8
threads does: `settle` the previous round's 8 outcomes and claim 8, one
store call per round, until nothing is left. It prints claim+complete
tasks/s and CPU time per task: of this process (the store's own work for
memory and SQLite, the client's for Redis) and of redis-server (from
/proc/<pid>/stat), each the median of the runs.

    .venv/bin/python bench/claim_limits.py
    .venv/bin/python bench/claim_limits.py --tasks 50000 --repeat 5 --out bench/results/claim_limits.json

`--src DIR --workloads off` runs the "off" workload on another checkout's
stores (one without limits), for a before-and-after on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROUND = 8
TYPE = "echo"
LIMITS = {
    "max_running": 100_000,
    "max_running_per_key": 100_000,
    "max_starts_per_second": 1e9,
    "burst": 1_000_000_000,
}
STORES = ("memory", "sqlite", "redis")


def new_task(tenant: str, key: str | None) -> Any:
    from conveyor_server.stores import NewTask

    # Only a store with limits knows concurrency keys (see --src).
    extra = {} if key is None else {"concurrency_key": key}
    return NewTask(
        type=TYPE,
        payload=b"",
        labels=None,
        max_attempts=1,
        priority=0,
        timeout=None,
        delay=0.0,
        idempotency_key=None,
        fingerprint=None,
        tenant=tenant,
        **extra,
    )


def open_store(kind: str, tasks: int, where: str) -> Any:
    from conveyor_server.stores import MemoryStore, RedisStore, SqliteStore

    if kind == "memory":
        return MemoryStore(max_queue=tasks + 1, retention_count=1000)
    if kind == "sqlite":
        return SqliteStore(where, max_queue=tasks + 1, retention_count=1000)
    return RedisStore(where, max_queue=tasks + 1, retention_count=1000, lease_seconds=300.0)


async def run_once(
    kind: str, where: str, redis_pid: int | None, tasks: int, on: bool, tenants: int, keys: int
) -> dict[str, float]:
    from redis_cost import cpu_seconds, own_cpu

    from conveyor_server.stores import Outcome, TaskRecord

    store = open_store(kind, tasks, where)
    try:
        now = time.time()
        if on:
            await store.update_type(TYPE, now, limits=LIMITS)
        for start in range(0, tasks, 1000):
            batch = []
            for n in range(start, min(start + 1000, tasks)):
                if on:
                    batch.append(new_task(f"tenant-{n % tenants}", f"key-{(n // tenants) % keys}"))
                else:
                    batch.append(new_task("", None))
            await store.create(batch, now)

        redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
        own_before, started = own_cpu(), time.perf_counter()
        done = 0
        claimed: list[TaskRecord] = []
        while True:
            outcomes = [Outcome(r.id, r.claim, result=b"") for r in claimed]
            ended, claimed = await store.settle(outcomes, ROUND, time.time(), (TYPE,))
            done += len(ended)
            if not claimed:
                break
        elapsed = time.perf_counter() - started
        own = own_cpu() - own_before
        redis_cpu = cpu_seconds(redis_pid) - redis_before if redis_pid else 0.0
        assert done == tasks, f"{done} of {tasks} tasks ran"
        assert await store.depth() == 0
        figures = {"tasks_per_s": tasks / elapsed, "own_us_per_task": own / tasks * 1e6}
        if redis_pid:
            figures["redis_us_per_task"] = redis_cpu / tasks * 1e6
        return figures
    finally:
        await store.close()


async def measure(
    args: argparse.Namespace, tmp: Path, redis_port: int | None, redis_pid: int | None
) -> dict[str, dict[str, dict[str, float]]]:
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for kind in args.stores:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.workloads}
        for n in range(args.repeat):
            for name in args.workloads:
                if kind == "redis":
                    where = f"redis://127.0.0.1:{redis_port}/0?prefix=claim-{name}-{n}"
                else:
                    where = str(tmp / f"claim-{name}-{n}.db")
                runs[name].append(
                    await run_once(
                        kind,
                        where,
                        redis_pid if kind == "redis" else None,
                        args.tasks,
                        name == "on",
                        args.tenants,
                        args.keys,
                    )
                )
        figures[kind] = {
            name: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for name, results in runs.items()
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--keys", type=int, default=10, help="concurrency keys per tenant")
    parser.add_argument("--stores", type=lambda s: s.split(","), default=list(STORES))
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=["off", "on"])
    parser.add_argument("--src", type=Path, default=BENCH.parent, help="the checkout to measure")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    sys.path[:0] = [str(args.src / "client"), str(args.src / "service"), str(BENCH)]

    from _peers_processes import Processes, free_port
    from redis_cost import wait_for_redis

    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        port = pid = None
        if "redis" in args.stores:
            port = free_port()
            redis = processes.start(
                "redis",
                [
                    shutil.which("redis-server") or "redis-server",
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", tmp),
                ],
            )
            wait_for_redis(port)
            pid = redis.pid
        figures = asyncio.run(measure(args, Path(tmp), port, pid))
    print(
        f"{args.tasks} tasks, rounds of {ROUND}, median of {args.repeat};"
        f" on: {args.tenants} tenants x {args.keys} keys, every limit set\n"
    )
    print("| store | limits and fairness | tasks/s | this process µs/task | Redis µs/task |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind, rows in figures.items():
        for name, row in rows.items():
            redis_cpu = f"{row['redis_us_per_task']:.1f}" if "redis_us_per_task" in row else "-"
            print(
                f"| {kind} | {name} | {row['tasks_per_s']:,.0f}"
                f" | {row['own_us_per_task']:.1f} | {redis_cpu} |"
            )
    if args.out is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        settings.pop("out")
        settings.pop("src")
        args.out.write_text(json.dumps({"args": settings, **figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
