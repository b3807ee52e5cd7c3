"""The change feed's costs: memory per open WatchTasks stream, the delay of
one change to many subscribers, and the server CPU per task the feed takes.

Each part runs a fresh `conveyor-server` subprocess (the code of this
checkout) and drives it from this process with grpc.aio:

- memory: the server's RSS before and after opening `--streams` WatchTasks
  streams (nothing matches their filter, so none sends a message), over
  gRPC and, as Server-Sent Events, over HTTP (`GET /v1/tasks:watch`);
- fan-out: with `--streams` streams open on one label, a task of that label
  is cancelled, `--rounds` times; the delay of each stream is the time it
  received the CANCELLED snapshot minus the task's update_time (the
  server's clock, on this machine);
- CPU: `--tasks` no-op tasks (`sleep` for 0 s) submitted in batches at full speed, the
  server's CPU time (user + system) until all are finished and every
  stream has fallen quiet, per task, with 0, 1 and 100 WatchTasks streams
  reading every change (a slow stream gets the latest state of each task).

    .venv/bin/python bench/feed.py                  # about two minutes
    .venv/bin/python bench/feed.py --store redis://127.0.0.1:6379/0?prefix=bench-feed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

# bench/ is on the path when this file runs as a script.
from _core_harness import (
    ROOT,
    Server,
    free_port,
    percentile,
    rss_kib,
    stop_process,
    wait_serving,
)

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

CHANNELS = 10  # streams are spread over this many connections
BATCH = 500


@contextmanager
def server(store: str, log_dir: Path, name: str, http_port: int = -1) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'client'}:{ROOT / 'service'}"}
    log = log_dir / f"feed-{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "conveyor_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        store,
        "--max-queue",
        "1000000",
        "--retention-count",
        "1000000",
        "--http-port",
        str(http_port),
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = Server(process, f"127.0.0.1:{port}", log)
    try:
        wait_serving(running, "conveyor.v1.TaskService")
        yield running
    finally:
        stop_process(process)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def stubs(address: str) -> tuple[list[grpc.aio.Channel], list[pb_grpc.TaskServiceStub]]:
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    return channels, [pb_grpc.TaskServiceStub(channel) for channel in channels]


async def open_streams(
    stubs: list[pb_grpc.TaskServiceStub], count: int, request: pb.WatchTasksRequest
) -> list[Any]:
    calls = [stubs[i % len(stubs)].WatchTasks(request) for i in range(count)]
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    return calls


async def sse_memory(http_port: int, pid: int, streams: int) -> dict[str, Any]:
    """RSS per open `GET /v1/tasks:watch` event stream, none sending."""
    import aiohttp

    url = f"http://127.0.0.1:{http_port}/v1/tasks:watch?labels=bench=idle"
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        warm = await asyncio.gather(*(session.get(url) for _ in range(10)))
        for response in warm:
            response.close()
        await asyncio.sleep(1.0)
        before = rss_kib(pid)
        opened = await asyncio.gather(*(session.get(url) for _ in range(streams)))
        assert all(r.status == 200 for r in opened), {r.status for r in opened}
        await asyncio.sleep(2.0)
        after = rss_kib(pid)
        for response in opened:
            response.close()
    return {
        "streams": streams,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": (after - before) / streams,
    }


async def memory_and_fanout(address: str, pid: int, streams: int, rounds: int) -> dict[str, Any]:
    channels, clients = stubs(address)
    stub = clients[0]
    # Warm up the server's paths before the baseline.
    warm = await open_streams(clients, 10, pb.WatchTasksRequest(labels={"bench": "warm"}))
    for call in warm:
        call.cancel()
    await asyncio.sleep(1.0)
    before = rss_kib(pid)
    idle = await open_streams(clients, streams, pb.WatchTasksRequest(labels={"bench": "idle"}))
    await asyncio.sleep(2.0)
    after = rss_kib(pid)
    for call in idle:
        call.cancel()
    await asyncio.sleep(1.0)

    label = {"bench": uuid.uuid4().hex[:8]}
    calls = await open_streams(clients, streams, pb.WatchTasksRequest(labels=label))
    delays: list[float] = []
    for _ in range(rounds):
        request = pb.SubmitTaskRequest(type="sleep", labels=label)
        request.delay.seconds = 600
        task = (await stub.SubmitTask(request)).task
        # Every stream sees the creation first.
        await asyncio.gather(*(call.read() for call in calls))

        async def cancelled(call: Any) -> float:
            message = await call.read()
            received = time.time()
            assert message.task.state == task_pb2.TASK_STATE_CANCELLED, message
            changed = message.task.update_time.ToNanoseconds() / 1e9
            return received - changed

        waiting = [asyncio.ensure_future(cancelled(call)) for call in calls]
        await stub.CancelTask(pb.CancelTaskRequest(id=task.id))
        delays += await asyncio.gather(*waiting)
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()
    return {
        "streams": streams,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_stream": (after - before) / streams,
        "fanout_rounds": rounds,
        "fanout_p50_ms": percentile(delays, 0.50) * 1000,
        "fanout_p99_ms": percentile(delays, 0.99) * 1000,
        "fanout_max_ms": max(delays) * 1000,
    }


async def cpu_per_task(address: str, pid: int, tasks: int, watchers: int) -> dict[str, Any]:
    channels, clients = stubs(address)
    calls = await open_streams(clients, watchers, pb.WatchTasksRequest()) if watchers else []
    received = [0]

    async def drain(call: Any) -> None:
        async for _ in call:
            received[0] += 1

    readers = [asyncio.ensure_future(drain(call)) for call in calls]
    start_cpu = cpu_seconds(pid)
    started = time.monotonic()

    async def submit(stub: pb_grpc.TaskServiceStub, count: int) -> None:
        request = pb.BatchSubmitTasksRequest(
            requests=[pb.SubmitTaskRequest(type="sleep") for _ in range(count)]
        )
        await stub.BatchSubmitTasks(request)

    await asyncio.gather(
        *(
            submit(clients[i % len(clients)], min(BATCH, tasks - i * BATCH))
            for i in range((tasks + BATCH - 1) // BATCH)
        )
    )
    # Polled rather than watched: a watcher would be part of the load.
    unfinished = pb.ListTasksRequest(
        states=[task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_RUNNING], page_size=1
    )
    while True:
        if not (await clients[0].ListTasks(unfinished)).tasks:
            break
        await asyncio.sleep(0.05)
    # The streams may still be sending: measure until they fall quiet.
    while True:
        before = received[0]
        await asyncio.sleep(0.3)
        if received[0] == before:
            break
    elapsed = time.monotonic() - started
    used = cpu_seconds(pid) - start_cpu
    for call in calls:
        call.cancel()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "tasks": tasks,
        "watchers": watchers,
        "messages_received": received[0],
        "seconds": elapsed,
        "tasks_per_s": tasks / elapsed,
        "server_cpu_us_per_task": used / tasks * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feed.json")
    args = parser.parse_args()
    log_dir = ROOT / ".bench"
    log_dir.mkdir(exist_ok=True)

    results: dict[str, Any] = {"store": args.store.split("?")[0]}
    with server(args.store, log_dir, "fanout") as running:
        results["streams"] = asyncio.run(
            memory_and_fanout(running.address, running.process.pid, args.streams, args.rounds)
        )
    http_port = free_port()
    with server(args.store, log_dir, "sse", http_port) as running:
        results["sse"] = asyncio.run(sse_memory(http_port, running.process.pid, args.streams))
    results["cpu"] = []
    for watchers in (0, 1, 100):
        with server(args.store, log_dir, f"cpu-{watchers}") as running:
            results["cpu"].append(
                asyncio.run(
                    cpu_per_task(running.address, running.process.pid, args.tasks, watchers)
                )
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    streams = results["streams"]
    print(f"store {results['store']}")
    print("| metric | result |")
    print("| --- | ---: |")
    print(
        f"| memory per WatchTasks stream, {streams['streams']} open | "
        f"{streams['kib_per_stream']:.1f} KiB |"
    )
    sse = results["sse"]
    print(
        f"| memory per HTTP event stream (GET /v1/tasks:watch), {sse['streams']} open | "
        f"{sse['kib_per_stream']:.1f} KiB |"
    )
    print(
        f"| fan-out of one change to {streams['streams']} streams, p50 | "
        f"{streams['fanout_p50_ms']:.1f} ms |"
    )
    print(f"| fan-out p99 | {streams['fanout_p99_ms']:.1f} ms |")
    for run in results["cpu"]:
        print(
            f"| server CPU per task, {run['watchers']} streams watching every change | "
            f"{run['server_cpu_us_per_task']:.0f} us ({run['tasks_per_s']:.0f} tasks/s) |"
        )


if __name__ == "__main__":
    main()
