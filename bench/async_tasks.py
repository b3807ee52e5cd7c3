"""How many `await asyncio.sleep(1)` tasks one worker runs at once, and its memory.

Starts one `conveyor-server` process on memory:// with 2 handler threads and
`--async-tasks` places for coroutines, registers `bench/_async_tasks_app.py`
(`nap`: `await asyncio.sleep(seconds)`, returning how many naps ran at once
when it started), then submits waves of N naps at once and waits for them.

Per wave it prints: N, the most naps the worker ran at once (the largest
count a nap saw at its start), how long the wave took from the first submit
to the last result, and the server's RSS before the wave and after it
(finished tasks are kept only `--retention-count` deep, so what stays is
the executor's own memory). The last size is repeated to show that memory
stays flat over waves.

    .venv/bin/python bench/async_tasks.py
    .venv/bin/python bench/async_tasks.py --waves 1000,5000,10000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conveyor import Client, TaskSpec, TaskState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core_harness import SERVICE_NAME, Server, free_port, rss_kib, stop_process, wait_serving

BENCH = Path(__file__).resolve().parent
BATCH = 1000


def start_server(capacity: int, log: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "conveyor_server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--http-port=-1",
        "--workers=2",
        f"--async-tasks={capacity}",
        "--tasks=_async_tasks_app",
        "--retention-count=1000",
        "--max-queue=1000000",
        "--log-level=WARNING",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, f"127.0.0.1:{port}", log)
    wait_serving(server, SERVICE_NAME)
    return server


def run_wave(client: Client, size: int, seconds: float) -> tuple[int, float]:
    """Submit `size` naps at once; return the most that ran at once and how
    long the wave took."""
    started = time.monotonic()
    handles = []
    for first in range(0, size, BATCH):
        specs = [TaskSpec("nap", {"seconds": seconds}) for _ in range(min(BATCH, size - first))]
        handles += client.submit_batch(specs)
    done = client.wait_all(handles, timeout=600)
    took = time.monotonic() - started
    failed = [task for task in done if task.state is not TaskState.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} naps did not succeed, e.g. {failed[0]}")
    return max(int(task.result["running"]) for task in done), took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", default="100,1000,5000,10000", help="wave sizes")
    parser.add_argument("--repeat", type=int, default=3, help="waves of the last size")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each nap sleeps")
    parser.add_argument("--capacity", type=int, default=10_000, help="--async-tasks")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.waves.split(",")]
    sizes += [sizes[-1]] * (args.repeat - 1)
    log_dir = Path(".bench")
    log_dir.mkdir(exist_ok=True)
    server = start_server(args.capacity, log_dir / "async_tasks.log")
    rows: list[dict[str, Any]] = []
    try:
        with Client(server.address, timeout=30.0) as client:
            run_wave(client, 10, args.seconds)  # warm up the channel and the loop
            for size in sizes:
                before = rss_kib(server.process.pid)
                peak, took = run_wave(client, size, args.seconds)
                after = rss_kib(server.process.pid)
                rows.append(
                    {"size": size, "peak": peak, "took": took, "before": before, "after": after}
                )
                print(
                    f"wave {size}: {peak} at once, {took:.2f}s, "
                    f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stop_process(server.process)
    print(
        f"\n{args.seconds:g}s naps, 2 handler threads, --async-tasks {args.capacity}, memory://\n"
    )
    print("| naps submitted | most at once | wave took | RSS before | RSS after |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['size']:,} | {row['peak']:,} | {row['took']:.2f} s "
            f"| {row['before'] / 1024:.1f} MiB | {row['after'] / 1024:.1f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
