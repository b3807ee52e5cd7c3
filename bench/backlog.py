"""Cost against the backlog: submit and claim CPU per task and the first
ListTasks page of a filter, on an empty store and with N tasks pending and
N finished, on each store.

For each store and each N (and N = 0, the empty store, first), a fresh
`conveyor-server` subprocess (the code of this checkout) is filled through
BatchSubmitTasks, 1,000 requests per call, in this order:

- 5 `csv_stats` tasks labelled `team=rare`, due in 30 days: the oldest
  tasks, found by the selective filters below;
- N no-op tasks (`sleep` for 0 s, labelled `kind=done`) that run to
  completion and stay within retention;
- N `sleep` tasks labelled `kind=backlog`, due in 30 days: the pending
  backlog. Delayed rather than due: on a one-process store (memory, SQLite)
  every accepted type has its handler in the same process, so a due backlog
  would be run during the measurement; delayed tasks are held in the same
  records, creation order, tenant depths and listings a due backlog is.

Then, with the backlog present (the listing first, while the store holds
exactly the backlog):

1. submit: `--submits` SubmitTask calls, one task per call, sequential from
   this process (each due in 30 days, so the runner stays idle); the
   server's CPU time (user + system, from /proc) per call;
2. claim: `--claims` no-op tasks submitted 1,000 per call and run to
   completion; the CPU time per task of the process that claims and runs them
   (the server; on Redis the worker process, the API server reported
   beside it);
3. list: the first ListTasks page (default size) of each filter, `--calls`
   times; the median and the slowest call, wall time at this client.

CPU is measured rather than wall time because the machine may be shared,
and every ratio compares figures of one run: each figure against the empty
store's. Targets: CPU per task within 1.2x of the empty store's, the first
page under 50 ms.

    .venv/bin/python bench/backlog.py --quick            # N = 10^3, 10^4
    .venv/bin/python bench/backlog.py                    # N = 10^4, 10^5, 10^6
    .venv/bin/python bench/backlog.py --stores memory,sqlite --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc

# bench/ is on the path when this file runs as a script.
from _core_harness import ROOT, Server, free_port, machine_facts, stop_process, wait_serving
from feed import cpu_seconds

from conveyor.v1 import task_pb2
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

BATCH = 1000
FILL_CHANNELS = 4
RARE = 5
FAR_SECONDS = 30 * 86400
MAX_CPU_RATIO = 1.2
MAX_PAGE_MS = 50.0
STORES = ("memory", "sqlite", "redis")
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
PENDING = task_pb2.TASK_STATE_PENDING
TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)

# The filters whose first page is timed: broad ones (a million matches) and
# selective ones (five matches, the oldest tasks, under every other).
FILTERS: dict[str, pb.ListTasksRequest] = {
    "state=PENDING": pb.ListTasksRequest(states=[PENDING]),
    "state=SUCCEEDED": pb.ListTasksRequest(states=[task_pb2.TASK_STATE_SUCCEEDED]),
    "label kind=backlog": pb.ListTasksRequest(labels={"kind": "backlog"}),
    "type=csv_stats (5 oldest)": pb.ListTasksRequest(type="csv_stats"),
    "label team=rare (5 oldest)": pb.ListTasksRequest(labels={"team": "rare"}),
}


def noop(labels: dict[str, str], delay: int = 0) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(type="sleep", labels=labels)
    request.payload.update({"seconds": 0})
    if delay:
        request.delay.seconds = delay
    return request


def rare() -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(type="csv_stats", labels={"team": "rare"})
    request.payload.update({"csv": "name,age\nada,36\n"})
    request.delay.seconds = FAR_SECONDS
    return request


# ---------------------------------------------------------------------------
# Processes


class Stores:
    """Store URLs of this run: a temporary SQLite file per server, and a
    private Redis key prefix per server, deleted afterwards."""

    def __init__(self, redis_url: str, work_dir: Path) -> None:
        self.redis_url = redis_url
        self.work_dir = work_dir
        self.count = 0

    @contextmanager
    def url(self, kind: str) -> Iterator[str]:
        self.count += 1
        if kind == "memory":
            yield "memory://"
        elif kind == "sqlite":
            path = self.work_dir / f"backlog-{self.count}.db"
            try:
                yield f"sqlite:///{path}"
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif kind == "redis":
            prefix = f"bench-backlog-{uuid.uuid4().hex[:8]}"
            try:
                yield f"{self.redis_url}?prefix={prefix}"
            finally:
                delete_prefix(self.redis_url, prefix)
        else:
            raise ValueError(f"unknown store {kind!r}: use {', '.join(STORES)}")


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'client'}:{ROOT / 'service'}"}


@contextmanager
def conveyor(store: str, size: int, log_dir: Path, name: str) -> Iterator[tuple[Server, int]]:
    """A server (and on Redis a worker process) for a backlog of `size`;
    yields the server and the pid of the process that runs the tasks."""
    room = str(2 * size + 100_000)
    # The worker applies retention too, when it finishes tasks: the same limits for both.
    common = [
        *("--store", store, "--log-level", "WARNING"),
        *("--max-queue", room, "--retention-count", room),
    ]
    with ExitStack() as stack:
        runner_pid = None
        workers = "8"
        if store.startswith("redis://"):
            worker = start(
                ["worker", *common, "--workers", "8"], log_dir / f"backlog-{name}-worker.log"
            )
            stack.callback(stop_process, worker)
            runner_pid, workers = worker.pid, "0"
        port = free_port()
        log = log_dir / f"backlog-{name}.log"
        process = start(
            [
                *common,
                *("--host", "127.0.0.1", "--port", str(port), "--http-port", "-1"),
                *("--workers", workers),
            ],
            log,
        )
        stack.callback(stop_process, process, 60.0)
        server = Server(process, f"127.0.0.1:{port}", log)
        wait_serving(server, "conveyor.v1.TaskService")
        yield server, runner_pid or process.pid


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor_server", *args],
            cwd=ROOT,
            env=server_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


# ---------------------------------------------------------------------------
# Filling


async def submit_all(address: str, requests: Iterator[pb.SubmitTaskRequest], count: int) -> str:
    """Submits `count` requests 1,000 per call over a few connections;
    returns the id of the last task created."""
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(FILL_CHANNELS)
    ]
    stubs = [pb_grpc.TaskServiceStub(channel) for channel in channels]
    queue: asyncio.Queue[tuple[int, pb.BatchSubmitTasksRequest] | None] = asyncio.Queue(
        FILL_CHANNELS * 2
    )
    last: dict[int, str] = {}

    async def send(stub: pb_grpc.TaskServiceStub) -> None:
        while (item := await queue.get()) is not None:
            number, batch = item
            reply = await stub.BatchSubmitTasks(batch, timeout=300)
            last[number] = reply.tasks[-1].id

    senders = [asyncio.ensure_future(send(stub)) for stub in stubs]
    number = 0
    left = count
    while left:
        take = min(BATCH, left)
        batch = pb.BatchSubmitTasksRequest(requests=[next(requests) for _ in range(take)])
        await queue.put((number, batch))
        number += 1
        left -= take
    for _ in senders:
        await queue.put(None)
    await asyncio.gather(*senders)
    for channel in channels:
        await channel.close()
    return last[number - 1] if last else ""


def repeat(request: pb.SubmitTaskRequest) -> Iterator[pb.SubmitTaskRequest]:
    while True:
        yield request


def wait_finished(stub: pb_grpc.TaskServiceStub, ids: list[str], timeout_s: float) -> None:
    """Until each of `ids` is finished, polling GetTask (cheap on every store,
    unlike a listing of the unfinished tasks of a large backlog)."""
    deadline = time.monotonic() + timeout_s
    for task_id in ids:
        while True:
            task = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=30).task
            if task.state in TERMINAL:
                if task.state != task_pb2.TASK_STATE_SUCCEEDED:
                    raise RuntimeError(
                        f"task {task_id} ended {task_pb2.TaskState.Name(task.state)}"
                    )
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {task_id} not finished after {timeout_s:.0f}s")
            time.sleep(0.02)


def fill(server: Server, stub: pb_grpc.TaskServiceStub, size: int) -> float:
    started = time.monotonic()
    asyncio.run(submit_all(server.address, (rare() for _ in range(RARE)), RARE))
    if size:
        last = asyncio.run(submit_all(server.address, repeat(noop({"kind": "done"})), size))
        wait_finished(stub, [last], timeout_s=3600)
        asyncio.run(
            submit_all(server.address, repeat(noop({"kind": "backlog"}, FAR_SECONDS)), size)
        )
    return time.monotonic() - started


# ---------------------------------------------------------------------------
# Measuring


def idle_cpu(pid: int, seconds: float) -> float:
    """CPU seconds per second of a process left alone."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def submit_cpu(stub: pb_grpc.TaskServiceStub, pid: int, count: int) -> float:
    """Server CPU microseconds per SubmitTask call, one task per call."""
    request = noop({"kind": "probe"}, FAR_SECONDS)
    for _ in range(min(200, count)):  # warm-up
        stub.SubmitTask(request, timeout=30)
    before = cpu_seconds(pid)
    for _ in range(count):
        stub.SubmitTask(request, timeout=30)
    return (cpu_seconds(pid) - before) / count * 1e6


def claim_cpu(stub: pb_grpc.TaskServiceStub, pids: dict[str, int], count: int) -> dict[str, float]:
    """CPU microseconds per no-op task, submitted 1,000 per call and run to
    completion, of each process in `pids`."""
    labels = {"kind": "run"}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    requests = pb.BatchSubmitTasksRequest(requests=[noop(labels)] * min(BATCH, count))
    ids: list[str] = []
    left = count
    while left:
        take = min(BATCH, left)
        del requests.requests[take:]
        ids += [task.id for task in stub.BatchSubmitTasks(requests, timeout=60).tasks]
        left -= take
    # Tasks are claimed in order: once the last few are done, so is the rest.
    wait_finished(stub, ids[-16:], timeout_s=600)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wait_finished(stub, ids, timeout_s=60)  # checked, outside the measurement
    return {name: (after[name] - before[name]) / count * 1e6 for name in pids}


def list_latency(
    stub: pb_grpc.TaskServiceStub, calls: int, size: int
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, request in FILTERS.items():
        times: list[float] = []
        found = 0
        for _ in range(calls):
            started = time.perf_counter()
            reply = stub.ListTasks(request, timeout=120)
            times.append((time.perf_counter() - started) * 1000)
            found = len(reply.tasks)
        if found == 0 and (size or "rare" in name or "csv" in name):
            raise RuntimeError(f"ListTasks {name} found nothing")
        out[name] = {"median_ms": statistics.median(times), "max_ms": max(times), "tasks": found}
    return out


def measure(
    kind: str, stores: Stores, size: int, options: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    name = f"{kind}-{size}"
    print(f"== {kind}, backlog {size:,} pending + {size:,} finished", flush=True)
    with stores.url(kind) as url, conveyor(url, size, log_dir, name) as (server, runner):
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.TaskServiceStub(channel)
        try:
            fill_s = fill(server, stub, size)
            print(f"  filled in {fill_s:.0f} s", flush=True)
            time.sleep(1.0)
            pids = {"server": server.process.pid}
            if runner != server.process.pid:
                pids["worker"] = runner
            idle = {who: idle_cpu(pid, 2.0) for who, pid in pids.items()}
            # Listed first, while the store holds exactly the backlog.
            lists = list_latency(stub, options.calls, size)
            # The least of several rounds: on a shared machine other work only
            # ever adds to a round's CPU time.
            submits = [
                submit_cpu(stub, server.process.pid, options.submits) for _ in range(options.rounds)
            ]
            claims = [claim_cpu(stub, pids, options.claims) for _ in range(options.rounds)]
        finally:
            channel.close()
    result = {
        "store": kind,
        "size": size,
        "fill_seconds": round(fill_s, 1),
        "idle_cpu_per_s": idle,
        "submit_cpu_us": min(submits),
        "claim_cpu_us": {who: min(c[who] for c in claims) for who in pids},
        "rounds": {"submit_cpu_us": submits, "claim_cpu_us": claims},
        "list": lists,
    }
    print(f"  {json.dumps(result)}", flush=True)
    return result


# ---------------------------------------------------------------------------
# Report


def compare(results: list[dict[str, Any]]) -> None:
    """Adds each figure's ratio to the empty store's, per store, and verdicts."""
    empty = {r["store"]: r for r in results if r["size"] == 0}
    for result in results:
        base = empty.get(result["store"])
        if base is None:
            continue
        runner = "worker" if "worker" in result["claim_cpu_us"] else "server"
        result["submit_ratio"] = result["submit_cpu_us"] / base["submit_cpu_us"]
        result["claim_ratio"] = result["claim_cpu_us"][runner] / base["claim_cpu_us"][runner]
        result["cpu_pass"] = max(result["submit_ratio"], result["claim_ratio"]) <= MAX_CPU_RATIO
        # Judged on the median: the slowest call on a shared machine often
        # measures the machine; it is shown beside it.
        result["list_pass"] = all(f["median_ms"] < MAX_PAGE_MS for f in result["list"].values())


def markdown(results: list[dict[str, Any]]) -> str:
    head = [
        "store",
        "backlog N",
        "submit CPU/call (x empty)",
        "claim CPU/task (x empty)",
        *(f"{name}: median / max" for name in FILTERS),
    ]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: |" + " ---: |" * (len(head) - 2)]
    for r in results:
        runner = "worker" if "worker" in r["claim_cpu_us"] else "server"
        submit = f"{r['submit_cpu_us']:.0f} us"
        claim = f"{r['claim_cpu_us'][runner]:.0f} us"
        if r["size"]:
            submit += f" ({r['submit_ratio']:.2f}x)"
            claim += f" ({r['claim_ratio']:.2f}x)"
        if runner == "worker":
            claim += f", API {r['claim_cpu_us']['server']:.0f} us"
        pages = [
            f"{f['median_ms']:.1f} / {f['max_ms']:.1f} ms"
            + ("" if f["median_ms"] < MAX_PAGE_MS else " **miss**")
            for f in r["list"].values()
        ]
        cells = [r["store"], f"{r['size']:,}", submit, claim, *pages]
        if r["size"] and not r["cpu_pass"]:
            cells[0] += " **CPU miss**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 10^3 and 10^4, a smoke run")
    parser.add_argument(
        "--stores", default=",".join(STORES), help="comma list of " + ", ".join(STORES)
    )
    parser.add_argument("--sizes", default=None, help="comma list of backlog sizes N")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL; a private key prefix is used and deleted",
    )
    parser.add_argument("--submits", type=int, default=None, help="SubmitTask calls per round")
    parser.add_argument("--claims", type=int, default=None, help="tasks run per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each CPU figure")
    parser.add_argument("--calls", type=int, default=7, help="ListTasks calls per filter")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--render", type=Path, default=None, help="print the table of a finished run's JSON"
    )
    options = parser.parse_args(argv)
    options.stores = [s.strip() for s in options.stores.split(",") if s.strip()]
    for kind in options.stores:
        if kind not in STORES:
            parser.error(f"unknown store {kind!r}: use {', '.join(STORES)}")
    if options.sizes:
        options.sizes = [int(s.replace("_", "")) for s in options.sizes.split(",")]
    else:
        options.sizes = list(QUICK_SIZES if options.quick else FULL_SIZES)
    if options.submits is None:
        options.submits = 1000 if options.quick else 2000
    if options.claims is None:
        options.claims = 2000 if options.quick else 5000
    if options.out is None:
        where = ROOT / (".bench" if options.quick else "bench/results")
        options.out = where / "backlog.json"
    return options


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    if options.render is not None:
        results = json.loads(options.render.read_text())["results"]
        compare(results)
        print(markdown(results))
        return 0
    # Stopped by SIGTERM too, the servers started so far are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log_dir = ROOT / ".bench"
    log_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="conveyor-backlog-") as work:
        stores = Stores(options.redis, Path(work))
        for kind in options.stores:
            for size in [0, *options.sizes]:
                results.append(measure(kind, stores, size, options, log_dir))
                compare(results)
                write(options, results, started)
    print()
    print(
        "CPU time (user + system, from /proc), not wall time: the machine may be shared. "
        "Ratios compare with the empty store of the same run."
    )
    print(markdown(results))
    return 0


def write(options: argparse.Namespace, results: list[dict[str, Any]], started: float) -> None:
    facts = machine_facts(None)
    facts["seconds"] = round(time.monotonic() - started, 1)
    facts["quick"] = options.quick
    # Stores run separately share one file: the others' figures are kept.
    kept: list[dict[str, Any]] = []
    commands: dict[str, str] = {}
    if options.out.exists():
        earlier = json.loads(options.out.read_text())
        kept = [r for r in earlier["results"] if r["store"] not in options.stores]
        commands = {
            store: command
            for store, command in earlier.get("commands", {}).items()
            if store not in options.stores
        }
    commands.update(dict.fromkeys(options.stores, facts["command"]))
    document = {
        "machine": facts,
        "method": {
            "submits": options.submits,
            "claims": options.claims,
            "rounds": options.rounds,
            "list_calls": options.calls,
            "targets": {"cpu_ratio_at_most": MAX_CPU_RATIO, "first_page_ms_under": MAX_PAGE_MS},
            "note": "CPU is user + system time from /proc; list latency is wall time at the client",
        },
        "commands": commands,
        "results": kept + results,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
