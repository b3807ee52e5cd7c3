"""Where the CPU of a task goes on Redis: an API-only server, one worker
process and a private redis-server, each measured on its own.

Two workloads, each on fresh processes and a fresh Redis:

  one-at-a-time  THREADS client threads; each submits its share of no-op
                 `sleep {"seconds": 0}` tasks one per SubmitTask call, then
                 waits for each in order (the peer benchmark's shape).
  bulk           `submit_batch` of 1,000 tasks at a time until TASKS are
                 submitted, from one thread; timed until the last finishes
                 (tasks_per_s), and until the last batch is accepted
                 (submitted_per_s) while the worker runs them.

For each it prints tasks/s and the CPU time per task of the client (this
process), the API server, the worker and redis-server, read from
/proc/<pid>/stat before and after, and what Redis ran per task (INFO
commandstats: calls and microseconds of each command; EVALSHA is one script
call, a round trip). `--profile DIR` also records py-spy profiles of the API
server and the worker (`pip install py-spy`), as collapsed stacks
(DIR/<workload>-<process>.txt, one stack and its sample count a line).

    .venv/bin/python bench/redis_cost.py                 # both workloads
    .venv/bin/python bench/redis_cost.py --only bulk --tasks 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _peers_processes import ROOT, Processes, free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PREFIX = "cost"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


@contextmanager
def system(workers: int, profile: Path | None, name: str) -> Iterator[dict[str, Any]]:
    """A private redis-server, an API-only server and one worker process."""
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        redis_port = free_port()
        redis = processes.start(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                *("--port", str(redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", tmp),
            ],
        )
        store = f"redis://127.0.0.1:{redis_port}/0?prefix={PREFIX}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("client", "service", ".")),
        }
        server = [sys.executable, "-m", "conveyor_server"]
        api_port = free_port()
        wait_for_redis(redis_port)
        api = processes.start(
            "api",
            [
                *server,
                *("--host", "127.0.0.1", "--port", str(api_port), "--store", store),
                *("--workers", "0", "--log-level", "WARNING", "--retention-count", "1000000"),
            ],
            env=env,
        )
        worker = processes.start(
            "worker",
            [
                *server,
                "worker",
                *("--store", store, "--workers", str(workers), "--log-level", "WARNING"),
                *("--retention-count", "1000000"),
            ],
            env=env,
        )
        address = f"127.0.0.1:{api_port}"
        wait_ready(address)
        spies: list[subprocess.Popen[bytes]] = []
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            for role, process in (("api", api), ("worker", worker)):
                out = profile / f"{name}-{role}.txt"
                command = [spy, "record", "--pid", str(process.pid), "--rate", "200"]
                command += ["--format", "raw", "--output", str(out), "--nonblocking"]
                spies.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            # py-spy needs a moment to attach.
            time.sleep(1.0)
        try:
            yield {
                "address": address,
                "pids": {"api": api.pid, "worker": worker.pid, "redis": redis.pid},
                "redis_port": redis_port,
            }
        finally:
            for sampler in spies:
                sampler.send_signal(signal.SIGINT)
            for sampler in spies:
                sampler.wait(30)


def wait_for_redis(port: int) -> None:
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def wait_ready(address: str) -> None:
    """Until the API server accepts `sleep` (a live worker serves it)."""
    import conveyor

    with conveyor.Client(address, timeout=5) as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.submit("sleep", {"seconds": 0}).wait(timeout=10)
                return
            except conveyor.ConveyorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def measure(pids: dict[str, int], redis_port: int, run: Any, tasks: int) -> dict[str, Any]:
    import redis

    stats = redis.Redis(port=redis_port)
    stats.config_resetstat()
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    client_before = own_cpu()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    cpu = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
    cpu["client"] = own_cpu() - client_before
    per_task = {role: round(value / tasks * 1000, 3) for role, value in cpu.items()}
    per_task["all"] = round(sum(cpu.values()) / tasks * 1000, 3)
    # What Redis ran per task: scripts (EVALSHA, each a round trip) and the
    # commands inside them, with the microseconds Redis spent in each.
    commands = {
        name.removeprefix("cmdstat_"): (
            round(row["calls"] / tasks, 2),
            round(row["usec"] / tasks, 1),
        )
        for name, row in stats.info("commandstats").items()
        if row["calls"] / tasks >= 0.01
    }
    return {
        "tasks": tasks,
        "tasks_per_s": round(tasks / seconds),
        "cpu_ms_per_task": per_task,
        "redis_calls_and_us_per_task": dict(sorted(commands.items(), key=lambda kv: -kv[1][1])),
    }


def one_at_a_time(address: str, tasks: int, threads: int) -> None:
    import conveyor

    share = tasks // threads
    failures: list[BaseException] = []
    with conveyor.Client(address, timeout=60) as client:

        def lane() -> None:
            try:
                handles = [client.submit("sleep", {"seconds": 0}) for _ in range(share)]
                for handle in handles:
                    if handle.wait(timeout=120).state != conveyor.TaskState.SUCCEEDED:
                        raise RuntimeError(f"task {handle.id} did not succeed")
            except BaseException as exc:
                failures.append(exc)

        lanes = [threading.Thread(target=lane) for _ in range(threads)]
        for thread in lanes:
            thread.start()
        for thread in lanes:
            thread.join()
    if failures:
        raise failures[0]


def bulk(address: str, redis_port: int, tasks: int, timing: dict[str, float]) -> None:
    import redis

    import conveyor

    done = redis.Redis(port=redis_port)
    finished_before = done.zcard(f"{PREFIX}:finished")
    spec = conveyor.TaskSpec("sleep", {"seconds": 0})
    with conveyor.Client(address, timeout=60) as client:
        started = time.perf_counter()
        for start in range(0, tasks, 1000):
            client.submit_batch([spec] * min(1000, tasks - start))
        timing["submit_seconds"] = time.perf_counter() - started
    while done.zcard(f"{PREFIX}:finished") - finished_before < tasks:
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8, help="worker threads")
    parser.add_argument("--only", choices=("one-at-a-time", "bulk"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "one-at-a-time"):
        with system(args.workers, args.profile, "one-at-a-time") as sut:
            results["one-at-a-time"] = measure(
                sut["pids"],
                sut["redis_port"],
                lambda: one_at_a_time(sut["address"], args.tasks, args.threads),
                args.tasks // args.threads * args.threads,
            )
    if args.only in (None, "bulk"):
        with system(args.workers, args.profile, "bulk") as sut:
            timing: dict[str, float] = {}
            results["bulk"] = measure(
                sut["pids"],
                sut["redis_port"],
                lambda: bulk(sut["address"], sut["redis_port"], args.tasks, timing),
                args.tasks,
            )
            results["bulk"]["submitted_per_s"] = round(args.tasks / timing["submit_seconds"])
    for name, result in results.items():
        commands = result.pop("redis_calls_and_us_per_task")
        print(f"== {name}: {json.dumps(result)}")
        print(
            "   Redis, per task: calls / us: "
            + ", ".join(
                f"{command} {calls:g} / {us:g}" for command, (calls, us) in commands.items()
            )
        )
        result["redis_calls_and_us_per_task"] = commands
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
