"""What limits and fair turns cost the claim path of the Redis store.

Measures RedisStore directly, on a private redis-server, in one run, two
workloads side by side (alternating, each `--repeat` times on a fresh
prefix):

  off  one tenant, no concurrency key, no limits: the claim path as before
       fair queues (one FIFO in turn).
  on   TENANTS tenants with KEYS concurrency keys each, tasks spread over
       them in turn, and every limit set (max_running, max_running_per_key,
       max_starts_per_second with its bucket) high enough never to bind: the
       whole path runs (rotations of tenants and keys, counts, bucket).

Each creates TASKS tasks (not timed), then runs rounds as a worker with 8
threads does: `settle` the previous round's 8 outcomes and claim 8, one
script call per round, until nothing is left. It prints claim+complete
tasks/s, and the CPU time per task of redis-server (from /proc/<pid>/stat)
and of this process, each the median of the runs.

    .venv/bin/python bench/claim_limits.py
    .venv/bin/python bench/claim_limits.py --tasks 50000 --repeat 5
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
sys.path.insert(0, str(BENCH))
sys.path[:0] = [str(BENCH.parent / "client"), str(BENCH.parent / "service")]

from _peers_processes import Processes, free_port  # noqa: E402
from redis_cost import cpu_seconds, own_cpu, wait_for_redis  # noqa: E402

from conveyor_server.stores import NewTask, Outcome, RedisStore, TaskRecord  # noqa: E402

ROUND = 8
TYPE = "echo"
LIMITS = {
    "max_running": 100_000,
    "max_running_per_key": 100_000,
    "max_starts_per_second": 1e9,
    "burst": 1_000_000_000,
}


def task(tenant: str, key: str | None) -> NewTask:
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
        concurrency_key=key,
    )


async def run_once(
    url: str, redis_pid: int, tasks: int, fair: bool, tenants: int, keys: int
) -> dict[str, float]:
    store = RedisStore(url, max_queue=tasks + 1, retention_count=1000, lease_seconds=300.0)
    try:
        now = time.time()
        if fair:
            await store.update_type(TYPE, now, limits=LIMITS)
        for start in range(0, tasks, 1000):
            batch = []
            for n in range(start, min(start + 1000, tasks)):
                if fair:
                    batch.append(task(f"tenant-{n % tenants}", f"key-{(n // tenants) % keys}"))
                else:
                    batch.append(task("", None))
            await store.create(batch, now)

        redis_before, own_before, started = cpu_seconds(redis_pid), own_cpu(), time.perf_counter()
        done = 0
        claimed: list[TaskRecord] = []
        while True:
            outcomes = [Outcome(r.id, r.claim, result=b"") for r in claimed]
            ended, claimed = await store.settle(outcomes, ROUND, time.time(), (TYPE,))
            done += len(ended)
            if not claimed:
                break
        elapsed = time.perf_counter() - started
        redis_cpu, own = cpu_seconds(redis_pid) - redis_before, own_cpu() - own_before
        assert done == tasks, f"{done} of {tasks} tasks ran"
        assert await store.depth() == 0
        return {
            "tasks_per_s": tasks / elapsed,
            "redis_us_per_task": redis_cpu / tasks * 1e6,
            "client_us_per_task": own / tasks * 1e6,
        }
    finally:
        await store.close()


async def measure(args: argparse.Namespace, port: int, redis_pid: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for n in range(args.repeat):
        for name in ("off", "on"):
            url = f"redis://127.0.0.1:{port}/0?prefix=claim-{name}-{n}"
            runs[name].append(
                await run_once(url, redis_pid, args.tasks, name == "on", args.tenants, args.keys)
            )
    return {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--keys", type=int, default=10, help="concurrency keys per tenant")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
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
        figures = asyncio.run(measure(args, port, redis.pid))
    print(
        f"{args.tasks} tasks, rounds of {ROUND}, median of {args.repeat};"
        f" on: {args.tenants} tenants x {args.keys} keys, every limit set\n"
    )
    print("| claim path | tasks/s | Redis CPU µs/task | client CPU µs/task |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in figures.items():
        print(
            f"| limits and fairness {name} | {row['tasks_per_s']:,.0f}"
            f" | {row['redis_us_per_task']:.1f} | {row['client_us_per_task']:.1f} |"
        )
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": None}, **figures}, indent=2))


if __name__ == "__main__":
    main()
