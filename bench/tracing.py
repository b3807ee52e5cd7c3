"""What tracing costs the server per task: a server with OpenTelemetry on
(a tracer provider, a BatchSpanProcessor and an exporter that drops the
spans) against one without, in one run, on the same machine.

Each round starts a fresh `conveyor-server` subprocess (memory store) and
runs TASKS no-op `sleep {"seconds": 0}` tasks through it, in two workloads:

  one-at-a-time  THREADS client threads, each submitting its share one task
                 at a time, each submit in a span of its own when tracing
                 is on (as a service submits once per request it serves),
                 then waiting for each.
  batch          `submit_batch` of 500 tasks at a time, each batch in one
                 span when tracing is on, then waiting for all.

Three modes: `off` (no tracing anywhere), `on` (the server traces and
every submit is made in a span of the caller's), and `server-only` (the
server traces, the callers make no spans), which parts the cost of the
spans from that of the coalescing a trace per submit gives up.

The figure is the server process's CPU time (user + system, from
/proc/<pid>/stat) per task; the modes' rounds alternate, and the median of
ROUNDS rounds each is reported.

    .venv/bin/python bench/tracing.py                 # writes bench/results/tracing.json
    .venv/bin/python bench/tracing.py --quick         # a smoke run, not a figure to judge
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _peers_processes import ROOT, Processes, free_port  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

import conveyor  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 500


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of one process, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextmanager
def server(traced: bool) -> Iterator[tuple[str, int]]:
    """A fresh server subprocess; its address and pid."""
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as processes:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("client", "service", ".")),
        }
        command = [sys.executable, "-m", "conveyor_server", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--http-port", "-1", "--log-level", "WARNING"]
        command += ["--workers", "8", "--retention-count", "1000000"]
        if traced:
            command += ["--tasks", "bench._tracing_on"]
        process = processes.start("server", command, env=env)
        address = f"127.0.0.1:{port}"
        wait_ready(address)
        yield address, process.pid


def wait_ready(address: str) -> None:
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


def one_at_a_time(
    client: conveyor.Client, tasks: int, threads: int, span: Callable[[], Any]
) -> None:
    def submit_share(count: int) -> None:
        handles = []
        for _ in range(count):
            with span():
                handles.append(client.submit("sleep", {"seconds": 0}))
        for handle in handles:
            handle.wait(timeout=120)

    shares = [tasks // threads + (1 if i < tasks % threads else 0) for i in range(threads)]
    workers = [threading.Thread(target=submit_share, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def batch(client: conveyor.Client, tasks: int, threads: int, span: Callable[[], Any]) -> None:
    handles = []
    for start in range(0, tasks, BATCH):
        specs = [
            conveyor.TaskSpec("sleep", {"seconds": 0}) for _ in range(min(BATCH, tasks - start))
        ]
        with span():
            handles += client.submit_batch(specs)
    client.wait_all(handles, timeout=300)


WORKLOADS = {"one-at-a-time": one_at_a_time, "batch": batch}


MODES = ("off", "on", "server-only")


def round_of(workload: str, mode: str, tasks: int, threads: int) -> dict[str, float]:
    tracer = trace.get_tracer("bench")
    span: Callable[[], Any] = (
        (lambda: tracer.start_as_current_span("request")) if mode == "on" else _no_span
    )
    traced = mode != "off"
    with server(traced) as (address, pid), conveyor.Client(address, timeout=60) as client:
        before = cpu_seconds(pid)
        started = time.perf_counter()
        WORKLOADS[workload](client, tasks, threads, span)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(pid) - before
    return {"server_cpu_ms_per_task": cpu / tasks * 1000, "tasks_per_s": tasks / seconds}


@contextmanager
def _no_span() -> Iterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, one round each")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.rounds = 1000, 1
    out = args.out or (ROOT / (".bench" if args.quick else "bench/results") / "tracing.json")
    # The client's spans: recorded, never exported.
    trace.set_tracer_provider(TracerProvider())
    results: dict[str, Any] = {}
    for workload in WORKLOADS:
        samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                samples[mode].append(round_of(workload, mode, args.tasks, args.threads))
        summary = {
            mode: {
                key: round(statistics.median(sample[key] for sample in runs), 4)
                for key in ("server_cpu_ms_per_task", "tasks_per_s")
            }
            for mode, runs in samples.items()
        }
        off = summary["off"]["server_cpu_ms_per_task"]
        for mode in MODES[1:]:
            extra = summary[mode]["server_cpu_ms_per_task"] - off
            summary[mode]["extra_server_cpu_ms_per_task"] = round(extra, 4)
            summary[mode]["extra_percent"] = round(extra / off * 100, 1)
        results[workload] = summary
        print(workload, json.dumps(summary), flush=True)
    report = {
        "tasks": args.tasks,
        "threads": args.threads,
        "rounds": args.rounds,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
